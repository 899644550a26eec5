"""Positions inside self-attention: rotary (RoPE), Shaw et al. relative embeddings, T5 bias.

A :class:`MultiHeadAttention` whose ``relative_positions`` is set builds one of these and calls
its three hooks with the integer positions of the queries and keys (``[T]`` and ``[S]``; in
incremental decoding the query is the single position ``step`` and the keys ``0 ... step``):

- ``rotate(x, positions)`` turns per-head queries and keys before the dot product (RoPE);
- ``score_bias(query, query_positions, key_positions)`` adds to the scaled scores;
- ``value_term(probs, query_positions, key_positions)`` adds to the attention output.

Every scheme depends only on the offsets ``key_position - query_position``, so a cached
incremental decoder reproduces the full forward pass, and right padding (which keeps every real
position where it is) changes nothing real. All shapes follow from the input shapes and the
config (no data-dependent Python control flow), which keeps the layers ``torch.export``-able.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer


class AttentionPositions(Layer):
    """Base of the position schemes of self-attention; every hook defaults to "no change"."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        """No fields of its own."""

    # True when the scores need an explicit softmax (a score bias or a value term), so the
    # attention cannot use the fused SDPA kernel.
    modifies_scores: bool = False

    def check_shape(self, num_heads: int, head_dim: int) -> None:
        """Raises ConfigError unless this scheme fits attention with these head shapes."""

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[B, H, T, Dh] queries or keys at [T] positions -> [B, H, T, Dh]."""
        return x

    def score_bias(
        self, query: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor | None:
        """Added to the scaled scores [B, H, T, S] (broadcastable), or None.

        Args:
          query: [B, H, T, Dh] projected (and rotated) queries.
          query_positions: [T] long.
          key_positions: [S] long.
        """
        return None

    def value_term(
        self, probs: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor | None:
        """Added to ``probs @ values``: [B, H, T, Dh] from probs [B, H, T, S], or None."""
        return None


def _check_field(owner: str, name: str, value: int, expected: int) -> None:
    if value != expected:
        raise ConfigError(
            f"{owner}.{name} is {value} but the attention has {name} = {expected}; "
            "set both to the same value"
        )


class RotaryPositions(AttentionPositions):
    """Rotary position embeddings (Su et al. 2021, "RoFormer").

    Channel pairs ``(i, i + Dh/2)`` of each query and key at position p are rotated by the angle
    ``p * w_i``, with ``w_i = max_timescale ** (-2i / Dh)``, so the query-key dot product
    depends on the positions only through their offset. Keys are cached already rotated.
    No parameters.
    """

    @dataclasses.dataclass
    class Config(AttentionPositions.Config):
        head_dim: int = param(64, doc="Per-head width Dh of the attention (must be even).")
        max_timescale: float = param(
            1.0e4, doc="Base of the rotation frequencies (RoPE theta).", above=0
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.head_dim % 2:
            raise ConfigError(f"RotaryPositions.head_dim must be even, got {config.head_dim}")
        exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float32) / config.head_dim
        self.register_buffer("inv_timescales", config.max_timescale**-exponents, persistent=False)

    def check_shape(self, num_heads: int, head_dim: int) -> None:
        _check_field("RotaryPositions", "head_dim", self.config.head_dim, head_dim)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotates [B, H, T, Dh] queries or keys at [T] positions; float32 inside."""
        angles = positions.float()[:, None] * self.inv_timescales[None, :]  # [T, Dh/2]
        cos, sin = torch.cos(angles), torch.sin(angles)
        first, second = x.float().chunk(2, dim=-1)
        rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
        return rotated.to(x.dtype)


class ShawRelativePositions(AttentionPositions):
    """Relative position embeddings with clipping (Shaw et al. 2018).

    With offsets ``r = clip(j - i, -K, K)`` (K = ``max_distance``) and per-offset vectors
    ``a_key[r]``, ``a_value[r]`` (shared by the heads, width Dh):
    ``score_ij = q_i . (k_j + a_key[r]) / sqrt(Dh)`` and ``z_i = sum_j p_ij (v_j + a_value[r])``.
    """

    @dataclasses.dataclass
    class Config(AttentionPositions.Config):
        head_dim: int = param(64, doc="Per-head width Dh of the attention.")
        max_distance: int = param(16, doc="Clipping distance K: offsets beyond +-K share one.")
        value_embeddings: bool = param(True, doc="Also add a_value[j - i] to the values.")

    config: Config
    modifies_scores = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.max_distance < 1:
            raise ConfigError(
                f"ShawRelativePositions.max_distance must be >= 1, got {config.max_distance}"
            )
        num_offsets = 2 * config.max_distance + 1
        std = config.head_dim**-0.5
        self.key_embeddings = nn.Parameter(torch.randn(num_offsets, config.head_dim) * std)
        self.value_embeddings = (
            nn.Parameter(torch.randn(num_offsets, config.head_dim) * std)
            if config.value_embeddings
            else None
        )

    def check_shape(self, num_heads: int, head_dim: int) -> None:
        _check_field("ShawRelativePositions", "head_dim", self.config.head_dim, head_dim)

    def offset_ids(
        self, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor:
        """[T, S] long row of each clipped offset ``j - i`` in the embedding tables."""
        k = self.config.max_distance
        return (key_positions[None, :] - query_positions[:, None]).clamp(-k, k) + k

    def score_bias(
        self, query: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor:
        """[B, H, T, S] ``q_i . a_key[j - i] / sqrt(Dh)``."""
        per_offset = torch.matmul(query, self.key_embeddings.to(query.dtype).t())  # [B,H,T,R]
        ids = self.offset_ids(query_positions, key_positions)
        ids = ids.expand(query.shape[0], query.shape[1], -1, -1)
        return torch.gather(per_offset, -1, ids) * (1.0 / math.sqrt(self.config.head_dim))

    def value_term(
        self, probs: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor | None:
        """[B, H, T, Dh] ``sum_j p_ij a_value[j - i]``, or None without value embeddings."""
        if self.value_embeddings is None:
            return None
        ids = self.offset_ids(query_positions, key_positions)
        one_hot = F.one_hot(ids, self.value_embeddings.shape[0]).to(probs.dtype)  # [T, S, R]
        per_offset = torch.einsum("bhts,tsr->bhtr", probs, one_hot)
        return torch.matmul(per_offset, self.value_embeddings.to(probs.dtype))


class T5RelativeBias(AttentionPositions):
    """A learned per-head scalar bias per bucket of the offset ``j - i`` (Raffel et al. 2020).

    Offsets below ``num_buckets / 2`` (per direction when bidirectional) get a bucket each;
    larger ones share logarithmically wider buckets up to ``max_distance``, beyond which all
    share the last bucket. A causal decoder uses ``bidirectional = False`` (later keys are
    masked anyway, so all buckets go to the past).
    """

    @dataclasses.dataclass
    class Config(AttentionPositions.Config):
        num_heads: int = param(
            8, doc="Number of heads H of the attention (one bias each).", at_least=1
        )
        num_buckets: int = param(32, doc="Number of offset buckets (split by direction).")
        max_distance: int = param(128, doc="Offsets from here on share the last bucket.")
        bidirectional: bool = param(True, doc="Separate buckets for keys after the query.")

    config: Config
    modifies_scores = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        exact = self._num_exact_buckets()
        if exact < 1 or config.max_distance <= exact:
            divisor = 4 if config.bidirectional else 2
            raise ConfigError(
                f"T5RelativeBias needs num_buckets >= {divisor} and max_distance > num_buckets "
                f"/ {divisor}; got num_buckets = {config.num_buckets}, "
                f"max_distance = {config.max_distance}"
            )
        # Small random init so that the heads start with different position preferences.
        self.bias = nn.Parameter(torch.randn(config.num_buckets, config.num_heads) * 0.02)

    def _num_exact_buckets(self) -> int:
        per_direction = self.config.num_buckets // (2 if self.config.bidirectional else 1)
        return per_direction // 2

    def check_shape(self, num_heads: int, head_dim: int) -> None:
        _check_field("T5RelativeBias", "num_heads", self.config.num_heads, num_heads)

    def buckets(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        """[T, S] long bucket of each offset ``j - i``."""
        c = self.config
        offsets = key_positions[None, :] - query_positions[:, None]
        per_direction = c.num_buckets // (2 if c.bidirectional else 1)
        if c.bidirectional:
            bucket_base = (offsets > 0).long() * per_direction
            distance = offsets.abs()
        else:
            bucket_base = torch.zeros_like(offsets)
            distance = (-offsets).clamp(min=0)
        exact = self._num_exact_buckets()
        log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(
            c.max_distance / exact
        )
        far = (exact + (log_ratio * (per_direction - exact)).long()).clamp(max=per_direction - 1)
        return bucket_base + torch.where(distance < exact, distance, far)

    def score_bias(
        self, query: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
    ) -> torch.Tensor:
        """[1, H, T, S] bias of each head for each query/key pair."""
        bias = F.embedding(self.buckets(query_positions, key_positions), self.bias)  # [T, S, H]
        return bias.permute(2, 0, 1)[None].to(query.dtype)
