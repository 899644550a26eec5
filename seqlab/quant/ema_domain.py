"""A quantization domain whose range is an exponential moving average of observed min/max."""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer
from seqlab.quant.fake_quantize import fake_quantize_symmetric


class EmaMinMaxDomain(Layer):
    """Tracks the range of a tensor in training; fake-quantizes it symmetrically on request.

    In training mode every call moves ``ema_min`` / ``ema_max`` towards the batch minimum and
    maximum (the first call sets them). The symmetric range is ``max(|ema_min|, |ema_max|)``;
    values are clipped to it and rounded to ``bits``-bit integers when ``quantizing`` is true
    and a range has been observed. Like Lingvo's passive min/max domain, but symmetric, so it
    maps onto int8 kernels without a zero point.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        decay: float = param(0.99, doc="EMA decay of the tracked min and max per training call.")
        bits: int = param(8, doc="Bits of the symmetric integers values are rounded to.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if not 0.0 <= config.decay < 1.0:
            raise ConfigError(f"EmaMinMaxDomain.decay must be in [0, 1), got {config.decay}")
        self.max_int = 2 ** (config.bits - 1) - 1
        self.register_buffer("ema_min", torch.zeros(()))
        self.register_buffer("ema_max", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _observe(self, inputs: torch.Tensor) -> None:
        low, high = inputs.detach().float().aminmax()
        decay = torch.where(self.observed, self.config.decay, 0.0)
        self.ema_min.copy_(decay * self.ema_min + (1.0 - decay) * low)
        self.ema_max.copy_(decay * self.ema_max + (1.0 - decay) * high)
        self.observed.fill_(True)

    def range(self) -> torch.Tensor:
        """Scalar tensor: the symmetric range ``max(|ema_min|, |ema_max|)``."""
        return torch.maximum(self.ema_min.abs(), self.ema_max.abs())

    def forward(self, inputs: torch.Tensor, quantizing: torch.Tensor) -> torch.Tensor:
        """Observes ``inputs`` (in training) and fake-quantizes them when ``quantizing``.

        Args:
          inputs: [...] float.
          quantizing: bool scalar tensor.

        Returns:
          [...] ``inputs``, fake-quantized to the tracked range if ``quantizing``.
        """
        if self.training:
            self._observe(inputs)
        limit = self.range().to(inputs.dtype)
        quantized = fake_quantize_symmetric(
            torch.maximum(torch.minimum(inputs, limit), -limit), limit, self.max_int
        )
        return torch.where(quantizing & self.observed, quantized, inputs)
