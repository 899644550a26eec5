"""Lingvo's fake-quantization schedule: a clipping range that narrows, then 8-bit rounding.

Before ``clip_start_step`` nothing is clipped. From ``clip_start_step`` to ``clip_end_step``
the clipping cap narrows linearly from ``start_cap`` to ``end_cap``; afterwards it stays at
``end_cap``. From ``quant_start_step`` (>= ``clip_end_step``) values are also rounded to
``bits``-bit symmetric integers (fake quantization). Lingvo: ``FakeQuantizationSchedule``.

Every method takes the step as a tensor and uses only tensor ops (no Python branch on its
value), so a model with a schedule traces into ``torch.export`` / ONNX unchanged.
"""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import Config, ConfigError, Configurable, param


class ClippingSchedule(Configurable):
    """The cap and the phase (off, clipping, quantizing) of a training step."""

    @dataclasses.dataclass
    class Config(Config):
        clip_start_step: int = param(0, doc="Step at which clipping starts, at start_cap.")
        clip_end_step: int = param(1000, doc="Step at which the cap reaches end_cap.")
        quant_start_step: int = param(
            1000, doc="Step from which values are fake-quantized (>= clip_end_step)."
        )
        start_cap: float = param(8.0, doc="Clipping cap at clip_start_step.")
        end_cap: float = param(1.0, doc="Clipping cap from clip_end_step on.")
        bits: int = param(8, doc="Bits of the symmetric integers values are rounded to.")

    def __init__(self, config: Config) -> None:
        if not config.clip_start_step <= config.clip_end_step <= config.quant_start_step:
            raise ConfigError(
                "ClippingSchedule needs clip_start_step <= clip_end_step <= quant_start_step, "
                f"got {config.clip_start_step}, {config.clip_end_step}, {config.quant_start_step}"
            )
        if not 2 <= config.bits <= 16:
            raise ConfigError(f"ClippingSchedule.bits must be in [2, 16], got {config.bits}")
        if config.end_cap <= 0 or config.start_cap < config.end_cap:
            raise ConfigError(
                f"ClippingSchedule needs start_cap >= end_cap > 0, got start_cap="
                f"{config.start_cap}, end_cap={config.end_cap}"
            )
        self.config = config

    @property
    def max_int(self) -> int:
        """Largest integer of the symmetric range, e.g. 127 for 8 bits."""
        return 2 ** (self.config.bits - 1) - 1

    def cap(self, step: torch.Tensor) -> torch.Tensor:
        """The clipping cap at ``step`` (a scalar tensor); ``start_cap`` before clipping."""
        c = self.config
        span = max(c.clip_end_step - c.clip_start_step, 1)
        ratio = ((step.float() - c.clip_start_step) / span).clamp(0.0, 1.0)
        return ratio * c.end_cap + (1.0 - ratio) * c.start_cap

    def clipping(self, step: torch.Tensor) -> torch.Tensor:
        """Bool scalar tensor: whether values are clipped at ``step``."""
        return step >= self.config.clip_start_step

    def quantizing(self, step: torch.Tensor) -> torch.Tensor:
        """Bool scalar tensor: whether values are fake-quantized at ``step``."""
        return step >= self.config.quant_start_step
