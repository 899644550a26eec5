"""Additive (Bahdanau et al. 2015) source attention: ``v^T tanh(W_q q + W_k k)``."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.source_attention import SourceAttention


class AdditiveAttention(SourceAttention):
    """Scores each source position with a one-hidden-layer network of query and key.

    The key projection ``W_k k`` (with the network's bias) is computed once per sentence in
    ``preprocess_source``; a step only projects its query. The preprocessed source is
    ``NestedMap(source_keys=[B, S, A], source_values=[B, S, Dv], paddings=[B, S])``.
    """

    @dataclasses.dataclass
    class Config(SourceAttention.Config):
        hidden_dim: int = param(
            1024, doc="Width A of the hidden layer of the scoring network.", at_least=1
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if min(config.query_dim, config.source_dim, config.hidden_dim) < 1:
            raise ConfigError(
                f"{type(self).__name__} needs query_dim, source_dim and hidden_dim >= 1, got "
                f"{config.query_dim}, {config.source_dim} and {config.hidden_dim}"
            )
        self.query_proj = nn.Linear(config.query_dim, config.hidden_dim, bias=False)
        self.source_proj = nn.Linear(config.source_dim, config.hidden_dim)
        bound = 1.0 / math.sqrt(config.hidden_dim)
        self.energy_weight = nn.Parameter(torch.empty(config.hidden_dim).uniform_(-bound, bound))

    def compute_source_keys(self, source: torch.Tensor) -> torch.Tensor:
        """[B, S, Dk] -> [B, S, A]: ``W_k k + b``, once per sentence."""
        return self.source_proj(source)

    def hidden_preactivations(self, query: torch.Tensor, preprocessed: NestedMap) -> torch.Tensor:
        """``W_q q + W_k k + b`` for every (query, source position) pair.

        Args:
          query: [B, Q, Dq].
          preprocessed: from ``preprocess_source``.

        Returns:
          [B, Q, S, A].
        """
        return self.query_proj(query)[:, :, None, :] + preprocessed.source_keys[:, None, :, :]

    def score(self, hidden_preactivations: torch.Tensor) -> torch.Tensor:
        """``v^T tanh(.)``: [B, Q, S, A] -> [B, Q, S] energies."""
        return torch.matmul(torch.tanh(hidden_preactivations), self.energy_weight)

    def compute_energies(
        self, query: torch.Tensor, preprocessed: NestedMap, state: NestedMap
    ) -> torch.Tensor:
        """[B, Q, Dq] queries -> [B, Q, S] energies (no state)."""
        return self.score(self.hidden_preactivations(query, preprocessed))
