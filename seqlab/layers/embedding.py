"""Token embeddings (optionally shared with the output softmax) and absolute positions.

Absolute positions come sinusoidal (fixed) or learned (a table); both are
``AbsolutePositions``, so a model's ``positions`` field accepts either config.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer


class TokenEmbedding(Layer):
    """Looks up token ids; ``logits`` reuses the same matrix as the output projection.

    Lookups are scaled by ``sqrt(model_dim)`` (Vaswani et al.) so that, with the init std of
    ``model_dim**-0.5``, embedded tokens have unit scale like the sinusoidal positions, while
    ``logits`` (which does not scale) starts with unit-scale logits for unit-scale inputs.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        vocab_size: int = param(32000, doc="Number of token ids.", at_least=1)
        model_dim: int = param(512, doc="Embedding width D.", at_least=1)
        scale_by_sqrt_dim: bool = param(True, doc="Multiply looked-up embeddings by sqrt(D).")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.weight = nn.Parameter(torch.empty(config.vocab_size, config.model_dim))
        nn.init.normal_(self.weight, mean=0.0, std=config.model_dim**-0.5)
        self.scale = math.sqrt(config.model_dim) if config.scale_by_sqrt_dim else 1.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeds token ids.

        Args:
          ids: [B, T] integer token ids.

        Returns:
          [B, T, D] embeddings.
        """
        return nn.functional.embedding(ids, self.weight) * self.scale

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Projects hidden states onto the vocabulary with the (shared) embedding matrix.

        Args:
          inputs: [B, T, D].

        Returns:
          [B, T, V] unnormalized logits.
        """
        return nn.functional.linear(inputs, self.weight)


class AbsolutePositions(Layer):
    """Base of absolute position encodings: ``forward(length, offset)`` -> [T, D]."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(512, doc="Encoding width D.", at_least=1)
        max_length: int = param(
            1024, doc="Number of positions the encoding is made for.", at_least=1
        )

    config: Config

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """Encodings of positions ``offset, ..., offset + length - 1``: [T, D] float32."""
        raise NotImplementedError


class SinusoidalPositions(AbsolutePositions):
    """Fixed sinusoidal position encodings (tensor2tensor layout: sines, then cosines).

    Channel ``i < D/2`` of position ``p`` is ``sin(p * w_i)`` and channel ``D/2 + i`` is
    ``cos(p * w_i)``, with timescales ``1 / w_i`` spaced geometrically from ``min_timescale``
    to ``max_timescale``. The first ``max_length`` positions are cached in a non-persistent
    buffer (not saved in checkpoints); longer requests are computed on the fly.
    """

    @dataclasses.dataclass
    class Config(AbsolutePositions.Config):
        model_dim: int = param(512, doc="Encoding width D (must be even).", at_least=1)
        max_length: int = param(
            1024, doc="Positions precomputed and cached at construction.", at_least=1
        )
        min_timescale: float = param(1.0, doc="Shortest sinusoid period / (2 pi).", above=0)
        max_timescale: float = param(1.0e4, doc="Longest sinusoid period / (2 pi).", above=0)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.model_dim % 2:
            raise ConfigError(f"SinusoidalPositions.model_dim must be even, got {config.model_dim}")
        table = self._compute(torch.arange(config.max_length, dtype=torch.float32))
        self.register_buffer("table", table, persistent=False)

    def _compute(self, positions: torch.Tensor) -> torch.Tensor:
        """[T] float positions -> [T, D] encodings."""
        c = self.config
        num_timescales = c.model_dim // 2
        log_increment = math.log(c.max_timescale / c.min_timescale) / max(num_timescales - 1, 1)
        inv_timescales = c.min_timescale * torch.exp(
            torch.arange(num_timescales, dtype=torch.float32, device=positions.device)
            * -log_increment
        )
        scaled = positions[:, None] * inv_timescales[None, :]
        return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """Encodings of positions ``offset, ..., offset + length - 1``.

        Args:
          length: number of positions T.
          offset: first position (e.g. the decode step).

        Returns:
          [T, D] float32 encodings, on the device of the module.
        """
        end = offset + length
        if end <= self.table.shape[0]:
            return self.table[offset:end]
        positions = torch.arange(offset, end, dtype=torch.float32, device=self.table.device)
        return self._compute(positions)


class LearnedPositions(AbsolutePositions):
    """Learned absolute positions: a ``[max_length, D]`` table (Gehring et al. 2017).

    Initialized like fairseq's learned positions, normal with std ``D**-0.5``. Positions past
    the table are an error: the model never learned them.
    """

    @dataclasses.dataclass
    class Config(AbsolutePositions.Config):
        model_dim: int = param(512, doc="Encoding width D.", at_least=1)
        max_length: int = param(
            1024, doc="Rows of the table: the longest sequence it embeds.", at_least=1
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.weight = nn.Parameter(torch.empty(config.max_length, config.model_dim))
        nn.init.normal_(self.weight, mean=0.0, std=config.model_dim**-0.5)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """Encodings of positions ``offset, ..., offset + length - 1``.

        Args:
          length: number of positions T.
          offset: first position (e.g. the decode step).

        Returns:
          [T, D] rows of the table.

        Raises:
          ValueError: when the positions run past ``max_length``.
        """
        end = offset + length
        if end > self.config.max_length:
            raise ValueError(
                f"LearnedPositions has max_length = {self.config.max_length} positions, but "
                f"positions up to {end - 1} were asked for; raise positions.max_length"
            )
        return self.weight[offset:end]
