"""Mixed precision by device: autocast, the float16 loss scaler, and whether bfloat16 pays
off on this machine's CPU."""

from __future__ import annotations

import contextlib
import typing
from pathlib import Path
from typing import Literal

import torch

from seqlab.core.config import ConfigError

MixedPrecision = Literal["none", "bfloat16", "float16"]
MIXED_PRECISIONS: tuple[str, ...] = typing.get_args(MixedPrecision)
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}

# CPU flags of native bfloat16 arithmetic (dot products in AVX512-BF16, tiles in AMX).
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def check_mixed_precision(mixed_precision: str, device: torch.device) -> None:
    """Raises ConfigError (naming trainer.mixed_precision) for a choice ``device`` lacks."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(
            f"trainer.mixed_precision {mixed_precision!r}; expected one of {MIXED_PRECISIONS}"
        )
    if mixed_precision == "float16" and device.type != "cuda":
        raise ConfigError(
            "trainer.mixed_precision=float16 needs a CUDA device (it trains with a loss "
            f"scaler); on {device.type} use bfloat16 or none"
        )


def autocast(mixed_precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast on ``device`` for ``mixed_precision`` (none, bfloat16 or float16)."""
    if mixed_precision == "none":
        return contextlib.nullcontext()
    check_mixed_precision(mixed_precision, device)
    return torch.autocast(device.type, dtype=_DTYPES[mixed_precision])


def grad_scaler(mixed_precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler: enabled for float16 on CUDA, a pass-through otherwise."""
    enabled = mixed_precision == "float16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type, enabled=enabled)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def bf16_slowdown_message(mixed_precision: str, device: torch.device) -> str | None:
    """A warning when ``mixed_precision`` asks for bfloat16 on a CPU without bf16 units, where
    autocast converts every matmul's inputs and runs slower than float32; else None."""
    if mixed_precision != "bfloat16" or device.type != "cpu":
        return None
    flags = cpu_flags()
    if not flags or any(flag in flags for flag in _BF16_CPU_FLAGS):
        return None
    return (
        "trainer.mixed_precision=bfloat16 on a CPU without bfloat16 units "
        f"(no {' or '.join(_BF16_CPU_FLAGS)} in /proc/cpuinfo; torch reports "
        f"{torch.backends.cpu.get_cpu_capability()}): autocast will likely be slower than "
        "float32 here; set --set trainer.mixed_precision=none"
    )
