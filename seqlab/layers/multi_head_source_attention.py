"""Multi-head source attention around any inner :class:`SourceAttention` (RNMT+'s attention).

Not to be confused with ``seqlab.layers.attention.MultiHeadAttention``, the Transformer's
scaled dot-product attention: here each head runs a configurable inner attention (additive in
RNMT+, also dot-product or location-sensitive) over its slice of projected keys and values.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.additive_attention import AdditiveAttention
from seqlab.layers.source_attention import SourceAttention


class MultiHeadSourceAttention(SourceAttention):
    """Projects queries, keys and values to H heads, attends per head, projects the context.

    Heads are folded into the batch of the inner attention, so its inner rows are
    ``(example, head, query)`` and one inner call serves all heads. The inner config's
    ``query_dim`` and ``source_dim`` must both be ``hidden_dim / num_heads``
    (:func:`multi_head_source_attention_config` fills them in).

    Layouts (B examples, N = B * K query rows, H heads, S source positions):

    - preprocessed: ``NestedMap(inner=<inner preprocessed, every leaf [B, H, ...]>,
      paddings=[B, S])``.
    - state: the inner state with every leaf ``[N, H, ...]``, so beam reorders stay one
      ``index_select`` on dim 0.
    - probs: the heads' probabilities averaged over heads, ``[N, S]``.
    """

    @dataclasses.dataclass
    class Config(SourceAttention.Config):
        value_dim: int = param(1024, doc="Width Dv of the source values.", at_least=1)
        hidden_dim: int = param(
            1024, doc="Total width of the projected queries, keys and values (H heads).", at_least=1
        )
        num_heads: int = param(4, doc="Number of heads H; must divide hidden_dim.", at_least=1)
        output_dim: int = param(
            1024, doc="Width of the context vector after the output proj.", at_least=1
        )
        bias: bool = param(True, doc="Whether the four projections have biases.")
        inner: SourceAttention.Config = param(
            AdditiveAttention.Config(query_dim=256, source_dim=256, hidden_dim=256),
            doc="Attention of each head, over hidden_dim / num_heads wide queries and keys.",
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.num_heads < 1 or config.hidden_dim % config.num_heads:
            raise ConfigError(
                f"MultiHeadSourceAttention.num_heads ({config.num_heads}) must be >= 1 and "
                f"divide hidden_dim ({config.hidden_dim})"
            )
        head_dim = config.hidden_dim // config.num_heads
        for key in ("query_dim", "source_dim"):
            if getattr(config.inner, key) != head_dim:
                raise ConfigError(
                    f"MultiHeadSourceAttention.inner.{key} is {getattr(config.inner, key)} but "
                    f"hidden_dim / num_heads is {config.hidden_dim} / {config.num_heads} = "
                    f"{head_dim}; set inner.{key} = {head_dim} (see "
                    "multi_head_source_attention_config)"
                )
        self.num_heads = config.num_heads
        self.head_dim = head_dim
        self.query_proj = nn.Linear(config.query_dim, config.hidden_dim, bias=config.bias)
        self.key_proj = nn.Linear(config.source_dim, config.hidden_dim, bias=config.bias)
        self.value_proj = nn.Linear(config.value_dim, config.hidden_dim, bias=config.bias)
        self.output_proj = nn.Linear(config.hidden_dim, config.output_dim, bias=config.bias)
        self.inner = config.inner.build()
        self.is_stateful = self.inner.is_stateful

    # ---- layouts --------------------------------------------------------------------------------
    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, H * d] -> [B * H, S, d]: heads folded into the batch."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2).flatten(0, 1)

    @staticmethod
    def _to_inner_rows(x: torch.Tensor, num_examples: int) -> torch.Tensor:
        """[B * K, H, ...] -> [B * H * K, ...]: inner rows ordered (example, head, query)."""
        return x.unflatten(0, (num_examples, -1)).transpose(1, 2).flatten(0, 2)

    def _to_outer_rows(self, x: torch.Tensor, num_examples: int) -> torch.Tensor:
        """[B * H * K, ...] -> [B * K, H, ...], the inverse of ``_to_inner_rows``."""
        return x.unflatten(0, (num_examples, self.num_heads, -1)).transpose(1, 2).flatten(0, 1)

    @staticmethod
    def _inner_source(preprocessed: NestedMap) -> NestedMap:
        return preprocessed.inner.transform(lambda v: v.flatten(0, 1))

    # ---- the SourceAttention interface --------------------------------------------------------
    def preprocess_source(
        self,
        source: torch.Tensor,
        source_values: torch.Tensor,
        source_paddings: torch.Tensor,
    ) -> NestedMap:
        """Projects keys and values to heads and preprocesses them for the inner attention."""
        self.check_source(source, source_values, source_paddings)
        if source_values.shape[-1] != self.config.value_dim:
            raise ValueError(
                f"MultiHeadSourceAttention: source_values must be [B, S, value_dim="
                f"{self.config.value_dim}], got {list(source_values.shape)}"
            )
        num_examples = source.shape[0]
        inner = self.inner.preprocess_source(
            self._split_heads(self.key_proj(source)),
            self._split_heads(self.value_proj(source_values)),
            source_paddings.repeat_interleave(self.num_heads, dim=0),
        )
        return NestedMap(
            inner=inner.transform(lambda v: v.unflatten(0, (num_examples, self.num_heads))),
            paddings=source_paddings,
        )

    def init_state(self, preprocessed: NestedMap, batch_size: int) -> NestedMap:
        """The inner attention's initial state, every leaf ``[N, H, ...]``."""
        num_examples = preprocessed.paddings.shape[0]
        inner = self.inner.init_state(self._inner_source(preprocessed), batch_size * self.num_heads)
        return inner.transform(lambda v: self._to_outer_rows(v, num_examples))

    def extend_step(
        self, query: torch.Tensor, preprocessed: NestedMap, state: NestedMap
    ) -> tuple[torch.Tensor, torch.Tensor, NestedMap]:
        """Attends with one query per row; see ``SourceAttention.extend_step``.

        Returns:
          (context [N, output_dim], probs [N, S] averaged over heads, new state).
        """
        num_examples = preprocessed.paddings.shape[0]
        query = self.query_proj(query).unflatten(-1, (self.num_heads, self.head_dim))
        context, probs, inner_state = self.inner.extend_step(
            self._to_inner_rows(query, num_examples),
            self._inner_source(preprocessed),
            state.transform(lambda v: self._to_inner_rows(v, num_examples)),
        )
        context = self._to_outer_rows(context, num_examples).flatten(1)
        probs = self._to_outer_rows(probs, num_examples).mean(dim=1)
        new_state = inner_state.transform(lambda v: self._to_outer_rows(v, num_examples))
        return self.output_proj(context), probs, new_state


def multi_head_source_attention_config(
    inner: SourceAttention.Config,
    query_dim: int,
    source_dim: int,
    hidden_dim: int,
    num_heads: int,
    value_dim: int | None = None,
    output_dim: int | None = None,
    bias: bool = True,
) -> MultiHeadSourceAttention.Config:
    """A ``MultiHeadSourceAttention.Config`` with every dimension filled in consistently.

    Args:
      inner: the per-head attention; a copy gets ``query_dim = source_dim = hidden_dim /
        num_heads`` (its other fields, e.g. an additive ``hidden_dim``, are kept).
      query_dim: width of the queries.
      source_dim: width of the source the keys are computed from.
      hidden_dim: total projected width, split into ``num_heads`` heads.
      num_heads: H.
      value_dim: width of the source values; None = ``source_dim``.
      output_dim: width of the context; None = ``hidden_dim``.
      bias: whether the projections have biases.
    """
    if num_heads < 1 or hidden_dim % num_heads:
        raise ConfigError(
            f"num_heads ({num_heads}) must be >= 1 and divide hidden_dim ({hidden_dim})"
        )
    inner = inner.copy()
    inner.query_dim = inner.source_dim = hidden_dim // num_heads
    return MultiHeadSourceAttention.Config(
        query_dim=query_dim,
        source_dim=source_dim,
        value_dim=source_dim if value_dim is None else value_dim,
        hidden_dim=hidden_dim,
        num_heads=num_heads,
        output_dim=hidden_dim if output_dim is None else output_dim,
        bias=bias,
        inner=inner,
    )
