"""Convolutional subsampling: two strided 3x3 Conv2d layers, 4x fewer frames, then a projection.

The input [B, T, F] is treated as a one-channel image. Each convolution (stride 2 in time and
frequency, padding 1, ReLU) sees padded frames as zeros, and its output frame t is real when
``t < ceil(length / 2)``, so outputs at real frames do not depend on what the padding holds.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import param
from seqlab.core.layer import Layer, apply_paddings, lengths_to_paddings


def _halve(size: int | torch.Tensor) -> int | torch.Tensor:
    """Output length of a kernel-3, stride-2, padding-1 convolution: ceil(size / 2)."""
    return (size + 1) // 2


class ConvSubsampling(Layer):
    """[B, T, F] features -> [B, ceil(ceil(T / 2) / 2), D]."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        input_dim: int = param(80, doc="Feature bins F per input frame.", at_least=1)
        num_channels: int = param(144, doc="Channels of both convolutions.")
        output_dim: int = param(144, doc="Width D of the projected output frames.", at_least=1)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        c = config.num_channels
        self.conv1 = nn.Conv2d(1, c, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=2, padding=1)
        self.activation = nn.ReLU()
        self.output_proj = nn.Linear(c * _halve(_halve(config.input_dim)), config.output_dim)

    def forward(
        self, inputs: torch.Tensor, paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Subsamples by 4 in time.

        Args:
          inputs: [B, T, F].
          paddings: [B, T], 1.0 = pad.

        Returns:
          (outputs [B, T', D], paddings [B, T']) with T' = ceil(ceil(T / 2) / 2); padded
          outputs are zero.
        """
        lengths = (1.0 - paddings).sum(dim=1).round().long()
        x = apply_paddings(inputs, paddings)[:, None]  # [B, 1, T, F]
        for conv in (self.conv1, self.conv2):
            x = self.activation(conv(x))
            lengths = _halve(lengths)
            # [B, C, T, F]: zero the padded frames before the next layer sees them.
            mask = lengths_to_paddings(lengths, x.shape[2])
            x = x * (1.0 - mask)[:, None, :, None].to(x.dtype)
        b, c, t, f = x.shape
        out = self.output_proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        out_paddings = lengths_to_paddings(lengths, t)
        return apply_paddings(out, out_paddings), out_paddings
