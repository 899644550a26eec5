"""Batch normalization over the real frames of a padded sequence batch."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import param
from seqlab.core.layer import Layer


class MaskedBatchNorm(Layer):
    """BatchNorm over [B, T, D] whose statistics count only real (unpadded) frames.

    ``nn.BatchNorm1d`` would average padded frames in, so an utterance's output would depend
    on how much padding its batch carries. Running statistics (for eval) are updated in
    training mode with ``momentum``.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        dim: int = param(144, doc="Channels D.")
        momentum: float = param(0.1, doc="Weight of the batch in the running statistics.")
        epsilon: float = param(1e-5, doc="Added to the variance.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.weight = nn.Parameter(torch.ones(config.dim))
        self.bias = nn.Parameter(torch.zeros(config.dim))
        self.register_buffer("running_mean", torch.zeros(config.dim))
        self.register_buffer("running_var", torch.ones(config.dim))

    def forward(self, inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """Normalizes per channel.

        Args:
          inputs: [B, T, D].
          paddings: [B, T], 1.0 = pad.

        Returns:
          [B, T, D]; padded frames hold arbitrary values.
        """
        if self.training:
            real = (1.0 - paddings)[..., None].to(inputs.dtype)
            count = real.sum().clamp(min=1.0)
            mean = (inputs * real).sum(dim=(0, 1)) / count
            var = (((inputs - mean) * real) ** 2).sum(dim=(0, 1)) / count
            with torch.no_grad():
                m = self.config.momentum
                self.running_mean.mul_(1 - m).add_(m * mean.detach().float())
                self.running_var.mul_(1 - m).add_(m * var.detach().float())
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.config.epsilon) * self.weight
        return (inputs - mean) * scale + self.bias
