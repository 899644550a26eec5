"""A fully connected projection as a Layer, so that config rewrites (e.g. QAT) can swap it."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import param
from seqlab.core.layer import Layer


class Linear(Layer):
    """``inputs @ weight.T + bias``; parameters named as in ``torch.nn.Linear``.

    The same parameter names keep checkpoints interchangeable with ``nn.Linear`` and with the
    fake-quantized replacement that quantization-aware training swaps in.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        input_dim: int = param(512, doc="Input width Din.", at_least=1)
        output_dim: int = param(512, doc="Output width Dout.", at_least=1)
        bias: bool = param(True, doc="Whether to add a learned bias.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.weight = nn.Parameter(torch.empty(config.output_dim, config.input_dim))
        self.bias = nn.Parameter(torch.zeros(config.output_dim)) if config.bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Projects the last dimension.

        Args:
          inputs: [..., Din].

        Returns:
          [..., Dout].
        """
        return nn.functional.linear(inputs, self.weight, self.bias)
