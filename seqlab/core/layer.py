"""The Layer base: an nn.Module built from its nested Config, plus padding helpers.

Every layer takes batch-major inputs ``[B, T, D]`` with ``paddings`` ``[B, T]`` (1.0 = pad,
0.0 = real). Decoder layers also provide ``init_state`` / ``extend_step``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import Config, Configurable


class Layer(nn.Module, Configurable):
    """Base of seqlab layers: ``Layer.Config(...).build()`` constructs the layer."""

    @dataclasses.dataclass
    class Config(Config):
        """No fields of its own."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config


def apply_paddings(inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
    """Zeroes padded frames.

    Args:
      inputs: [B, T, ...].
      paddings: [B, T], 1.0 = pad.

    Returns:
      [B, T, ...] with padded positions set to 0.
    """
    mask = (1.0 - paddings).to(inputs.dtype)
    return inputs * mask.reshape(mask.shape + (1,) * (inputs.dim() - 2))


def lengths_to_paddings(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """[B] integer lengths -> [B, T] float paddings (1.0 past each length)."""
    max_length = int(lengths.max()) if max_length is None else max_length
    positions = torch.arange(max_length, device=lengths.device)
    return (positions[None, :] >= lengths[:, None]).float()
