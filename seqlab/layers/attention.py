"""Multi-head dot-product attention with padding masks and incremental decoding."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer
from seqlab.layers.attention_positions import AttentionPositions
from seqlab.layers.dropout import dropout


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

    With ``relative_positions`` set (self-attention only), ``forward`` and ``extend_step``
    apply that scheme (rotary, Shaw et al., T5 bias; see ``attention_positions``) to query
    positions ``0 ... T-1`` and key positions ``0 ... S-1``; rotary attention keeps the SDPA
    kernel, schemes that change the scores use an explicit softmax. ``attend`` and
    ``attend_with_probs`` (the cross-attention paths) never apply it.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(512, doc="Query, key/value input and output width D.", at_least=1)
        num_heads: int = param(8, doc="Number of heads H; must divide model_dim.", at_least=1)
        dropout_prob: float = param(
            0.0, doc="Dropout on the attention probabilities.", at_least=0, below=1
        )
        bias: bool = param(True, doc="Whether the projections have biases.")
        relative_positions: AttentionPositions.Config | None = param(
            None,
            doc="Positions inside self-attention (RotaryPositions, ShawRelativePositions, "
            "T5RelativeBias), or None.",
        )

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
        self.relative_positions: AttentionPositions | None = None
        if config.relative_positions is not None:
            self.relative_positions = config.relative_positions.build()
            self.relative_positions.check_shape(self.num_heads, self.head_dim)

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
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attends from ``query`` to ``key_value``.

        Args:
          query: [B, T, D].
          key_value: [B, S, D]; the same tensor as ``query`` for self-attention.
          key_paddings: [B, S], 1.0 = pad; padded keys are never attended. None = no padding.
          causal: query position t attends only to key positions <= t (self-attention).
          segment_ids: [B, T] (self-attention, T = S) of packed sequences: a query attends
            only to keys of its own segment. None = one sequence per row.

        Returns:
          [B, T, D].
        """
        key, value = self.project_key_value(key_value)
        if self.relative_positions is None:
            return self.attend(query, key, value, key_paddings, causal, segment_ids)
        q = self._split_heads(self.query_proj(query))
        out = self._attend_at_positions(q, key, value, key_paddings, causal, segment_ids)
        return self.output_proj(self._merge_heads(out))

    def _attend_at_positions(
        self,
        q: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_paddings: torch.Tensor | None,
        causal: bool,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention with ``relative_positions`` at query positions ``0 ... T-1`` and key
        positions ``0 ... S-1``.

        Args:
          q: [B, H, T, Dh] projected queries.
          key: [B, H, S, Dh] projected (not yet rotated) keys.
          value: [B, H, S, Dh].
          key_paddings: [B, S], 1.0 = pad, or None.
          causal: query position t attends only to key positions <= t.
          segment_ids: [B, T] (T = S), keys only of the query's own segment; or None.

        Returns:
          [B, H, T, Dh].
        """
        positions = self.relative_positions
        assert positions is not None
        t, s = q.shape[2], key.shape[2]
        query_positions = torch.arange(t, device=q.device)
        key_positions = torch.arange(s, device=q.device)
        q = positions.rotate(q, query_positions)
        key = positions.rotate(key, key_positions)
        # Relative positions need no restart per segment: a query sees only its own segment.
        mask = _attention_mask(key_paddings, causal, t, s, segment_ids)
        if not positions.modifies_scores:
            return self._sdpa(q, key, value, mask, causal)
        if mask is None and causal:
            mask = _causal_mask(t, s, q.device)
        out, _ = self._softmax_attention(q, key, value, mask, (query_positions, key_positions))
        return out

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_paddings: torch.Tensor | None = None,
        causal: bool = False,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attends from ``query`` to already projected keys and values (SDPA path).

        Args:
          query: [B, T, D] (not yet projected).
          key: [B, H, S, Dh] from ``project_key_value``.
          value: [B, H, S, Dh] from ``project_key_value``.
          key_paddings: [B, S], 1.0 = pad, or None.
          causal: query position t attends only to key positions <= t.
          segment_ids: [B, T] (T = S), keys only of the query's own segment; or None.

        Returns:
          [B, T, D].
        """
        q = self._split_heads(self.query_proj(query))
        mask = _attention_mask(key_paddings, causal, q.shape[2], key.shape[2], segment_ids)
        return self.output_proj(self._merge_heads(self._sdpa(q, key, value, mask, causal)))

    def _sdpa(
        self,
        q: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
    ) -> torch.Tensor:
        """Fused attention of [B, H, T, Dh] queries to [B, H, S, Dh] keys/values -> [B, H, T, Dh].

        ``mask`` is from ``_attention_mask``; a causal mask alone is passed as ``causal``.
        """
        dropout_prob, is_causal = self._dropout_prob(), causal and mask is None
        if not torch.is_autocast_enabled("cpu"):
            # CUDA autocast keeps the half-precision inputs, which its fused kernels want.
            return F.scaled_dot_product_attention(
                q, key, value, attn_mask=mask, dropout_p=dropout_prob, is_causal=is_causal
            )
        # The CPU flash-attention kernel is several times slower in bfloat16 than in float32
        # (its backward above all), so under CPU autocast the attention runs in float32.
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(
                q.float(),
                key.float(),
                value.float(),
                attn_mask=mask,
                dropout_p=dropout_prob,
                is_causal=is_causal,
            )
        return out.to(q.dtype)

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
        mask = _attention_mask(key_paddings, False, q.shape[2], key.shape[2])
        out, probs = self._softmax_attention(q, key, value, mask)
        return self.output_proj(self._merge_heads(out)), probs.mean(dim=1)

    def _softmax_attention(
        self,
        q: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        positions: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Explicit-softmax attention of [B, H, T, Dh] queries to [B, H, S, Dh] keys/values.

        Args:
          q, key, value: per-head projections (rotated already, if rotary).
          mask: boolean, True = may attend, broadcastable to [B, H, T, S], or None.
          positions: ([T], [S]) query and key positions for ``relative_positions``'s score
            bias and value term, or None for none.

        Returns:
          (outputs [B, H, T, Dh], probs [B, H, T, S] before dropout; rows with every key
          masked are all zero).
        """
        scores = torch.matmul(q, key.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        if positions is not None:
            assert self.relative_positions is not None
            bias = self.relative_positions.score_bias(q, *positions)
            if bias is not None:
                scores = scores + bias
        if mask is not None:
            # A finite fill keeps fully padded rows finite (uniform); they are zeroed below.
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = scores.softmax(dim=-1)
        if mask is not None:
            probs = probs * mask.any(dim=-1, keepdim=True)
        dropped = dropout(probs, self._dropout_prob(), self.training)
        out = torch.matmul(dropped, value)
        if positions is not None:
            assert self.relative_positions is not None
            value_term = self.relative_positions.value_term(dropped, *positions)
            if value_term is not None:
                out = out + value_term
        return out, probs

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
          key_cache: [B, H, M, Dh] preallocated keys (M >= step + 1; rotated, with rotary
            positions), updated in place.
          value_cache: [B, H, M, Dh] preallocated values, updated in place.
          step: position of ``query``; cache positions < step hold earlier steps.

        Returns:
          [B, 1, D], equal to position ``step`` of ``forward(x, x, causal=True)``.
        """
        q = self._split_heads(self.query_proj(query))
        key, value = self.project_key_value(query)
        positions = self.relative_positions
        if positions is not None:
            query_positions = torch.arange(step, step + 1, device=q.device)
            q = positions.rotate(q, query_positions)
            key = positions.rotate(key, query_positions)  # cached rotated
        # narrow: a length-1 slice that torch 2.11's ONNX export also sees as length 1.
        key_cache.narrow(2, step, 1).copy_(key)
        value_cache.narrow(2, step, 1).copy_(value)
        keys, values = key_cache[:, :, : step + 1], value_cache[:, :, : step + 1]
        if positions is not None and positions.modifies_scores:
            key_positions = torch.arange(step + 1, device=q.device)
            out, _ = self._softmax_attention(
                q, keys, values, None, (query_positions, key_positions)
            )
        else:
            out = F.scaled_dot_product_attention(q, keys, values)
        return self.output_proj(self._merge_heads(out))

    def extend_step_beams(
        self,
        query: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        step: int,
        history_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``extend_step`` for K beams of each example, whose caches are never reordered.

        Beam k of example b writes its key and value at ``[b, :, step, k]``; which slot holds
        the earlier keys of a beam's own history is told by ``history_mask``. The K beams
        attend as K query positions of one row to the keys of all K slots, each masked to its
        own history, so a beam search step moves no cache (as cross-attention in
        ``TransformerDecoderLayer.extend_step`` never copies the encoder keys per beam).

        Args:
          query: [B, K, D], the inputs of the K beams at position ``step``.
          key_cache: [B, H, M, K, Dh] preallocated keys (rotated, with rotary positions),
            updated in place at position ``step``.
          value_cache: [B, H, M, K, Dh] preallocated values, updated in place.
          step: position of ``query``.
          history_mask: [B, 1, K, (step + 1) * K] boolean, True where beam k (row) may attend
            to key ``t * K + j``, i.e. where slot j at position t is in beam k's history.

        Returns:
          [B, K, D]; beam k equals ``extend_step`` with that beam's own history cached.
        """
        beams = query.shape[1]
        q = self._split_heads(self.query_proj(query))
        key, value = self.project_key_value(query)
        positions = self.relative_positions
        if positions is not None:
            query_positions = torch.full((beams,), step, device=q.device)
            q = positions.rotate(q, query_positions)
            key = positions.rotate(key, query_positions)
        key_cache[:, :, step] = key
        value_cache[:, :, step] = value
        # [B, H, (step + 1) * K, Dh] views: slot j of position t is key t * K + j.
        keys = key_cache[:, :, : step + 1].flatten(2, 3)
        values = value_cache[:, :, : step + 1].flatten(2, 3)
        if positions is not None and positions.modifies_scores:
            key_positions = torch.arange(step + 1, device=q.device).repeat_interleave(beams)
            out, _ = self._softmax_attention(
                q, keys, values, history_mask, (query_positions, key_positions)
            )
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=history_mask)
        return self.output_proj(self._merge_heads(out))


def _attention_mask(
    key_paddings: torch.Tensor | None,
    causal: bool,
    query_length: int,
    key_length: int,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Boolean mask (True = may attend) broadcastable to [B, H, T, S], or None if all may.

    A causal mask alone is returned as None too: SDPA's ``is_causal`` is faster than a mask.
    With ``segment_ids`` [B, T] (packed sequences), only keys of the query's segment are kept.
    """
    masks = []
    if key_paddings is not None:
        masks.append((key_paddings < 0.5)[:, None, None, :])
    if segment_ids is not None:
        masks.append((segment_ids[:, :, None] == segment_ids[:, None, :])[:, None])
    if not masks:
        return None
    mask = masks[0] if len(masks) == 1 else masks[0] & masks[1]
    if causal:
        mask = mask & _causal_mask(query_length, key_length, mask.device)
    return mask


def _causal_mask(query_length: int, key_length: int, device: torch.device) -> torch.Tensor:
    """[T, S] boolean, True where key position <= query position (both counted from 0)."""
    return torch.ones(query_length, key_length, dtype=torch.bool, device=device).tril()
