"""Multi-head dot-product attention with padding masks and incremental decoding."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer


class MultiHeadAttention(Layer):
    """Multi-head attention for self-attention (optionally causal) and cross-attention.

    The full-sequence path uses ``F.scaled_dot_product_attention`` with boolean masks
    (True = may attend). Query rows that may attend to nothing (every key padded) produce
    zeros rather than NaN, in values and gradients.

    Incremental decoding keeps preallocated ``[B, H, M, Dh]`` key/value caches that
    ``extend_step`` writes in place at position ``step``; cross-attention keys and values are
    computed once with ``project_key_value`` and reused by ``attend`` at every step.
    ``attend_with_probs`` is an explicit-softmax path that also returns head-averaged
    attention probabilities (for coverage penalties and alignment images).
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(512, doc="Query, key/value input and output width D.")
        num_heads: int = param(8, doc="Number of heads H; must divide model_dim.")
        dropout_prob: float = param(0.0, doc="Dropout on the attention probabilities.")
        bias: bool = param(True, doc="Whether the projections have biases.")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.model_dim % config.num_heads:
            raise ConfigError(
                f"MultiHeadAttention.num_heads ({config.num_heads}) must divide "
                f"model_dim ({config.model_dim})"
            )
        dim = config.model_dim
        self.num_heads = config.num_heads
        self.head_dim = dim // config.num_heads
        self.query_proj = nn.Linear(dim, dim, bias=config.bias)
        # Keys and values come from the same input, so one matmul computes both.
        self.key_value_proj = nn.Linear(dim, 2 * dim, bias=config.bias)
        self.output_proj = nn.Linear(dim, dim, bias=config.bias)
        for linear in (self.query_proj, self.key_value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, H, T, Dh]."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    @staticmethod
    def _merge_heads(x: torch.Tensor) -> torch.Tensor:
        """[B, H, T, Dh] -> [B, T, D]."""
        return x.transpose(1, 2).flatten(2)

    def _dropout_prob(self) -> float:
        return self.config.dropout_prob if self.training else 0.0

    def project_key_value(self, key_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projects the attended sequence to per-head keys and values.

        Args:
          key_value: [B, S, D].

        Returns:
          (keys, values), each [B, H, S, Dh].
        """
        key, value = self.key_value_proj(key_value).chunk(2, dim=-1)
        return self._split_heads(key), self._split_heads(value)

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor,
        key_paddings: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attends from ``query`` to ``key_value``.

        Args:
          query: [B, T, D].
          key_value: [B, S, D]; the same tensor as ``query`` for self-attention.
          key_paddings: [B, S], 1.0 = pad; padded keys are never attended. None = no padding.
          causal: query position t attends only to key positions <= t (self-attention).

        Returns:
          [B, T, D].
        """
        key, value = self.project_key_value(key_value)
        return self.attend(query, key, value, key_paddings, causal)

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_paddings: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attends from ``query`` to already projected keys and values (SDPA path).

        Args:
          query: [B, T, D] (not yet projected).
          key: [B, H, S, Dh] from ``project_key_value``.
          value: [B, H, S, Dh] from ``project_key_value``.
          key_paddings: [B, S], 1.0 = pad, or None.
          causal: query position t attends only to key positions <= t.

        Returns:
          [B, T, D].
        """
        q = self._split_heads(self.query_proj(query))
        mask = _attention_mask(key_paddings, causal, q.shape[2], key.shape[2])
        # The CPU flash-attention kernel is several times slower in bfloat16 than in float32
        # (its backward above all), so under autocast the attention itself runs in float32.
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float(),
                key.float(),
                value.float(),
                attn_mask=mask,
                dropout_p=self._dropout_prob(),
                is_causal=causal and mask is None,
            )
        return self.output_proj(self._merge_heads(out.to(q.dtype)))

    def attend_with_probs(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_paddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``attend`` (non-causal) with an explicit softmax that also returns the probs.

        Args:
          query: [B, T, D] (not yet projected).
          key: [B, H, S, Dh] from ``project_key_value``.
          value: [B, H, S, Dh] from ``project_key_value``.
          key_paddings: [B, S], 1.0 = pad, or None.

        Returns:
          (outputs [B, T, D], probs [B, T, S]): ``probs`` are the attention probabilities
          averaged over heads, before dropout; rows with every key padded are all zero.
        """
        q = self._split_heads(self.query_proj(query))
        scores = torch.matmul(q, key.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        mask = _attention_mask(key_paddings, False, q.shape[2], key.shape[2])
        if mask is not None:
            # A finite fill keeps fully padded rows finite (uniform); they are zeroed below.
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        if mask is not None:
            probs = probs * mask.any(dim=-1, keepdim=True)
        out = torch.matmul(F.dropout(probs, self._dropout_prob(), self.training), value)
        return self.output_proj(self._merge_heads(out)), probs.mean(dim=1)

    def extend_step(
        self,
        query: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        step: int,
    ) -> torch.Tensor:
        """One step of causal self-attention; writes this step's key/value into the caches.

        Args:
          query: [B, 1, D], the input at position ``step``.
          key_cache: [B, H, M, Dh] preallocated keys (M >= step + 1), updated in place.
          value_cache: [B, H, M, Dh] preallocated values, updated in place.
          step: position of ``query``; cache positions < step hold earlier steps.

        Returns:
          [B, 1, D], equal to position ``step`` of ``forward(x, x, causal=True)``.
        """
        q = self._split_heads(self.query_proj(query))
        key, value = self.project_key_value(query)
        key_cache[:, :, step : step + 1] = key
        value_cache[:, :, step : step + 1] = value
        out = F.scaled_dot_product_attention(
            q, key_cache[:, :, : step + 1], value_cache[:, :, : step + 1]
        )
        return self.output_proj(self._merge_heads(out))


def _attention_mask(
    key_paddings: torch.Tensor | None, causal: bool, query_length: int, key_length: int
) -> torch.Tensor | None:
    """Boolean mask (True = may attend) broadcastable to [B, H, T, S], or None if all may.

    A causal mask alone is returned as None too: SDPA's ``is_causal`` is faster than a mask.
    """
    if key_paddings is None:
        return None
    mask = (key_paddings < 0.5)[:, None, None, :]
    if causal:
        allowed = torch.ones(
            query_length, key_length, dtype=torch.bool, device=key_paddings.device
        ).tril()
        mask = mask & allowed
    return mask
