"""Position-wise feed-forward block of a Transformer layer."""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer
from seqlab.layers.dropout import Dropout


class FeedForward(Layer):
    """``linear(D -> H) -> activation -> dropout -> linear(H -> D)`` at every position."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(512, doc="Input and output width D.", at_least=1)
        hidden_dim: int = param(2048, doc="Inner width H.", at_least=1)
        activation: Literal["relu", "gelu", "silu"] = param(
            "relu", doc="Nonlinearity after the first projection (silu = swish, Conformer)."
        )
        dropout_prob: float = param(
            0.0, doc="Dropout on the hidden activations.", at_least=0, below=1
        )
        bias: bool = param(True, doc="Whether the projections have biases.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        activations = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
        if config.activation not in activations:
            raise ConfigError(
                f"FeedForward.activation must be one of {sorted(activations)}, "
                f"got {config.activation!r}"
            )
        self.input_proj = nn.Linear(config.model_dim, config.hidden_dim, bias=config.bias)
        self.output_proj = nn.Linear(config.hidden_dim, config.model_dim, bias=config.bias)
        self.activation = activations[config.activation]()
        self.dropout = Dropout(config.dropout_prob)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Applies the block.

        Args:
          inputs: [B, T, D].

        Returns:
          [B, T, D].
        """
        return self.output_proj(self.dropout(self.activation(self.input_proj(inputs))))
