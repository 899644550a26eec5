"""Conformer blocks and encoder stack (Gulati et al. 2020).

A block is ``x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LayerNorm``: macaron-style
half-step feed-forward modules around self-attention and a convolution module (pointwise conv
with GLU, depthwise conv, batch or layer norm, swish, pointwise conv). Padded frames are zeroed
before the depthwise convolution and masked in attention and batch statistics, so outputs at
real frames do not depend on the padding.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer, apply_paddings
from seqlab.layers.attention import MultiHeadAttention
from seqlab.layers.dropout import Dropout
from seqlab.layers.feed_forward import FeedForward
from seqlab.layers.masked_batch_norm import MaskedBatchNorm


class ConformerConvolution(Layer):
    """The convolution module; returns the residual branch (the caller adds it)."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(144, doc="Width D.", at_least=1)
        kernel_size: int = param(31, doc="Depthwise kernel (odd: centred, non-causal).")
        norm: Literal["batch_norm", "layer_norm"] = param(
            "batch_norm", doc="Norm after the depthwise conv (batch_norm counts real frames only)."
        )
        dropout_prob: float = param(0.1, doc="Dropout on the module output.", at_least=0, below=1)
        layer_norm_epsilon: float = param(1e-5, doc="LayerNorm epsilon.", above=0)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        dim = config.model_dim
        if config.kernel_size % 2 == 0:
            raise ConfigError(
                f"ConformerConvolution.kernel_size must be odd, got {config.kernel_size}"
            )
        self.input_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.pointwise_in = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(
            dim, dim, config.kernel_size, padding=config.kernel_size // 2, groups=dim
        )
        if config.norm == "batch_norm":
            self.norm: nn.Module = MaskedBatchNorm.Config(dim=dim).build()
        elif config.norm == "layer_norm":
            self.norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        else:
            raise ConfigError(
                f"ConformerConvolution.norm must be batch_norm or layer_norm, got {config.norm!r}"
            )
        self.activation = nn.SiLU()
        self.pointwise_out = nn.Linear(dim, dim)
        self.dropout = Dropout(config.dropout_prob)

    def forward(self, inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """[B, T, D] inputs, [B, T] paddings -> [B, T, D] branch output."""
        x = nn.functional.glu(self.pointwise_in(self.input_norm(inputs)), dim=-1)
        x = apply_paddings(x, paddings)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        x = self.norm(x, paddings) if isinstance(self.norm, MaskedBatchNorm) else self.norm(x)
        return self.dropout(self.pointwise_out(self.activation(x)))


class ConformerLayer(Layer):
    """One Conformer block."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(144, doc="Width D of the residual stream.", at_least=1)
        ffn_start: FeedForward.Config = param(
            FeedForward.Config(model_dim=144, hidden_dim=576, activation="silu"),
            doc="First half-step feed-forward module.",
        )
        self_attention: MultiHeadAttention.Config = param(
            MultiHeadAttention.Config(model_dim=144, num_heads=4), doc="Self-attention."
        )
        convolution: ConformerConvolution.Config = param(
            ConformerConvolution.Config(), doc="Convolution module."
        )
        ffn_end: FeedForward.Config = param(
            FeedForward.Config(model_dim=144, hidden_dim=576, activation="silu"),
            doc="Second half-step feed-forward module.",
        )
        residual_dropout_prob: float = param(
            0.1, doc="Dropout on the FFN and MHSA outputs.", at_least=0, below=1
        )
        layer_norm_epsilon: float = param(1e-5, doc="LayerNorm epsilon.", above=0)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        dim = config.model_dim
        for role in ("ffn_start", "self_attention", "convolution", "ffn_end"):
            child_dim = getattr(config, role).model_dim
            if child_dim != dim:
                raise ConfigError(
                    f"ConformerLayer.{role}.model_dim is {child_dim} but ConformerLayer.model_dim "
                    f"is {dim}; set both to the same value"
                )
        eps = config.layer_norm_epsilon
        self.ffn_start_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_start = config.ffn_start.build()
        self.self_attention_norm = nn.LayerNorm(dim, eps=eps)
        self.self_attention = config.self_attention.build()
        self.convolution = config.convolution.build()
        self.ffn_end_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_end = config.ffn_end.build()
        self.final_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = Dropout(config.residual_dropout_prob)

    def forward(self, inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """Applies the block.

        Args:
          inputs: [B, T, D].
          paddings: [B, T], 1.0 = pad.

        Returns:
          [B, T, D]; padded positions hold arbitrary values (the stack zeroes them).
        """
        x = inputs + 0.5 * self.dropout(self.ffn_start(self.ffn_start_norm(inputs)))
        h = self.self_attention_norm(x)
        x = x + self.dropout(self.self_attention(h, h, paddings))
        x = x + self.convolution(x, paddings)
        x = x + 0.5 * self.dropout(self.ffn_end(self.ffn_end_norm(x)))
        return self.final_norm(x)


class ConformerEncoder(Layer):
    """A stack of Conformer blocks over already subsampled frames."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        num_layers: int = param(16, doc="Number of blocks.", at_least=1)
        layer: ConformerLayer.Config = param(ConformerLayer.Config(), doc="Config of every block.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList([config.layer.build() for _ in range(config.num_layers)])

    def forward(self, inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """[B, T, D] inputs, [B, T] paddings -> [B, T, D], zero at padded positions."""
        x = inputs
        for layer in self.layers:
            x = layer(x, paddings)
        return apply_paddings(x, paddings)


def conformer_encoder_config(
    num_layers: int = 16,
    model_dim: int = 144,
    num_heads: int = 4,
    ffn_hidden_dim: int = 576,
    kernel_size: int = 31,
    dropout_prob: float = 0.1,
    attention_dropout_prob: float = 0.0,
    conv_norm: Literal["batch_norm", "layer_norm"] = "batch_norm",
) -> ConformerEncoder.Config:
    """A ``ConformerEncoder.Config`` with every dimension filled in consistently."""
    ffn = FeedForward.Config(model_dim=model_dim, hidden_dim=ffn_hidden_dim, activation="silu")
    return ConformerEncoder.Config(
        num_layers=num_layers,
        layer=ConformerLayer.Config(
            model_dim=model_dim,
            ffn_start=ffn,
            self_attention=MultiHeadAttention.Config(
                model_dim=model_dim, num_heads=num_heads, dropout_prob=attention_dropout_prob
            ),
            convolution=ConformerConvolution.Config(
                model_dim=model_dim,
                kernel_size=kernel_size,
                norm=conv_norm,
                dropout_prob=dropout_prob,
            ),
            ffn_end=ffn.copy(),
            residual_dropout_prob=dropout_prob,
        ),
    )
