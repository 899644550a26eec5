"""Dot-product (Luong et al. 2015) source attention, optionally with a learned per-dim scale."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.source_attention import SourceAttention

# 1 / softplus(0): makes the learned per-dim scale start at exactly 1 / sqrt(d) (as in Lingvo).
_INVERSE_SOFTPLUS_OF_ZERO = 1.0 / math.log(2.0)


class DotProductAttention(SourceAttention):
    """Energies ``scale * q . k``.

    With ``project_source`` the keys are ``W k`` (Luong's "general" score, computed once per
    sentence in ``preprocess_source``); without it (Luong's "dot"), ``source_dim`` must equal
    ``query_dim``. The scale is ``1 / sqrt(query_dim)`` if ``scale_by_sqrt_dim``, times, with
    ``per_dim_scale``, a learned positive factor per query dimension ``softplus(w_d) / softplus
    (0)`` (Lingvo's ``DotProductAttention``), which starts at one. The preprocessed source is
    ``NestedMap(source_keys=[B, S, Dq], source_values=[B, S, Dv], paddings=[B, S])``.
    """

    @dataclasses.dataclass
    class Config(SourceAttention.Config):
        project_source: bool = param(
            False, doc="Project the source to query_dim (Luong 'general'); else keys = source."
        )
        scale_by_sqrt_dim: bool = param(True, doc="Scale the energies by 1 / sqrt(query_dim).")
        per_dim_scale: bool = param(
            False, doc="Learn a positive scale per query dimension (starts at 1)."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if min(config.query_dim, config.source_dim) < 1:
            raise ConfigError(
                f"DotProductAttention needs query_dim and source_dim >= 1, got "
                f"{config.query_dim} and {config.source_dim}"
            )
        if not config.project_source and config.source_dim != config.query_dim:
            raise ConfigError(
                f"DotProductAttention.source_dim ({config.source_dim}) differs from query_dim "
                f"({config.query_dim}); set them equal or set project_source = True"
            )
        self.source_proj = (
            nn.Linear(config.source_dim, config.query_dim, bias=False)
            if config.project_source
            else None
        )
        self.per_dim_scale = (
            nn.Parameter(torch.zeros(config.query_dim)) if config.per_dim_scale else None
        )
        self.scale = 1.0 / math.sqrt(config.query_dim) if config.scale_by_sqrt_dim else 1.0

    def compute_source_keys(self, source: torch.Tensor) -> torch.Tensor:
        """[B, S, Dk] -> [B, S, Dq] keys: the source, projected if ``project_source``."""
        return source if self.source_proj is None else self.source_proj(source)

    def compute_energies(
        self, query: torch.Tensor, preprocessed: NestedMap, state: NestedMap
    ) -> torch.Tensor:
        """[B, Q, Dq] queries -> [B, Q, S] energies (no state)."""
        query = query * self.scale
        if self.per_dim_scale is not None:
            query = query * (F.softplus(self.per_dim_scale) * _INVERSE_SOFTPLUS_OF_ZERO)
        return torch.bmm(query, preprocessed.source_keys.transpose(1, 2))
