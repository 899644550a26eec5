"""Location-sensitive source attention (Chorowski et al. 2015), as in LAS and Tacotron 2.

The additive energies get a third term computed from where the attention was: a 1-D
convolution over the source of the previous step's alignment and/or the cumulative alignment
of all earlier steps, ``v^T tanh(W_q q + W_k k + U conv(alignments))``. It helps the
attention move forward monotonically over long inputs (speech frames).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.layers.additive_attention import AdditiveAttention

_FEATURES = {
    "previous": ("previous_probs",),
    "cumulative": ("cumulative_probs",),
    "both": ("previous_probs", "cumulative_probs"),
}


class LocationSensitiveAttention(AdditiveAttention):
    """Additive attention plus convolved alignment features; stateful.

    The state is ``NestedMap(previous_probs=[N, S], cumulative_probs=[N, S])``, float32, zero
    before the first step (no alignment yet), so the first step scores like additive attention
    with a zero location term. Both alignments are kept whatever ``location_features`` uses;
    ``cumulative_probs`` doubles as the coverage of the source so far. Padded positions always
    have zero alignment, so the convolution sees the same zeros there as past the end of the
    source, and extra padding changes nothing.
    """

    @dataclasses.dataclass
    class Config(AdditiveAttention.Config):
        location_features: Literal["previous", "cumulative", "both"] = param(
            "both",
            doc="Which alignments are convolved: the previous step's, the cumulative sum of all "
            "earlier steps', or both as two input channels.",
        )
        num_filters: int = param(32, doc="Number of convolution filters F.")
        filter_width: int = param(31, doc="Width of the (centered) filters; odd.")

    config: Config

    is_stateful = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        if config.location_features not in _FEATURES:
            raise ConfigError(
                f"LocationSensitiveAttention.location_features must be one of "
                f"{sorted(_FEATURES)}, got {config.location_features!r}"
            )
        if config.num_filters < 1 or config.filter_width < 1 or config.filter_width % 2 == 0:
            raise ConfigError(
                f"LocationSensitiveAttention needs num_filters >= 1 and an odd filter_width, got "
                f"num_filters={config.num_filters}, filter_width={config.filter_width}"
            )
        self.feature_names = _FEATURES[config.location_features]
        self.location_conv = nn.Conv1d(
            len(self.feature_names),
            config.num_filters,
            config.filter_width,
            padding=config.filter_width // 2,
            bias=False,
        )
        self.location_proj = nn.Linear(config.num_filters, config.hidden_dim, bias=False)

    def init_state(self, preprocessed: NestedMap, batch_size: int) -> NestedMap:
        """Zero alignments, ``NestedMap(previous_probs, cumulative_probs)`` each [N, S]."""
        paddings = preprocessed.paddings
        zeros = torch.zeros(batch_size, paddings.shape[1], device=paddings.device)
        return NestedMap(previous_probs=zeros, cumulative_probs=zeros.clone())

    def update_state(self, state: NestedMap, probs: torch.Tensor) -> NestedMap:
        """The step's probs become the previous alignment and add to the cumulative one."""
        return NestedMap(previous_probs=probs, cumulative_probs=state.cumulative_probs + probs)

    def location_term(self, state: NestedMap) -> torch.Tensor:
        """``U conv(alignments)``: [N, S] alignments in ``state`` -> [N, S, A]."""
        weight = self.location_conv.weight
        features = torch.stack([state[name] for name in self.feature_names], dim=1)  # [N, C, S]
        return self.location_proj(self.location_conv(features.to(weight.dtype)).transpose(1, 2))

    def compute_energies(
        self, query: torch.Tensor, preprocessed: NestedMap, state: NestedMap
    ) -> torch.Tensor:
        """[B, Q, Dq] queries, state of B * Q rows -> [B, Q, S] energies."""
        location = self.location_term(state).unflatten(0, (query.shape[0], query.shape[1]))
        return self.score(self.hidden_preactivations(query, preprocessed) + location)
