"""Whether bfloat16 autocast pays off on this machine's CPU."""

from __future__ import annotations

from pathlib import Path

import torch

# CPU flags of native bfloat16 arithmetic (dot products in AVX512-BF16, tiles in AMX).
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


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


def bf16_slowdown_message(mixed_precision: str) -> str | None:
    """A warning when ``mixed_precision`` asks for bfloat16 on a CPU without bf16 units, where
    autocast converts every matmul's inputs and runs slower than float32; else None."""
    if mixed_precision != "bfloat16" or torch.cuda.is_available():
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
