"""Tests for seqlab.layers.location_sensitive_attention (contract: test_source_attention.py)."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.layers.location_sensitive_attention import LocationSensitiveAttention

B, T, S, DQ, DK, A, F, W = 2, 3, 6, 4, 3, 5, 2, 3


def _attention(location_features: str) -> LocationSensitiveAttention:
    torch.manual_seed(0)
    return LocationSensitiveAttention.Config(
        query_dim=DQ, source_dim=DK, hidden_dim=A, location_features=location_features,
        num_filters=F, filter_width=W,
    ).build()  # fmt: skip


def _reference_probs(
    attention: LocationSensitiveAttention,
    query: torch.Tensor,
    source: torch.Tensor,
    length: int,
    previous: torch.Tensor,
    cumulative: torch.Tensor,
) -> torch.Tensor:
    """Chorowski et al. (2015) energies of one query over one example, written out: [length]."""
    channels = {"previous": [previous], "cumulative": [cumulative], "both": [previous, cumulative]}
    alignments = channels[attention.config.location_features]
    conv_weight = attention.location_conv.weight  # [F, C, W]
    energies = []
    for s in range(length):
        # f_s = sum over channels c and taps j of w[:, c, j] * alignment_c[s + j - W // 2].
        features = torch.zeros(F)
        for c, alignment in enumerate(alignments):
            for j in range(W):
                position = s + j - W // 2
                if 0 <= position < S:
                    features = features + conv_weight[:, c, j] * alignment[position]
        hidden = (
            attention.query_proj.weight @ query
            + attention.source_proj.weight @ source[s]
            + attention.source_proj.bias
            + attention.location_proj.weight @ features
        )
        energies.append(attention.energy_weight @ torch.tanh(hidden))
    return torch.stack(energies).softmax(0)


@pytest.mark.parametrize("location_features", ["previous", "cumulative", "both"])
def test_matches_chorowski_formula_step_by_step(location_features: str) -> None:
    attention = _attention(location_features)
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(B, T, DQ, generator=generator)
    source = torch.randn(B, S, DK, generator=generator)
    paddings = torch.tensor([[0.0] * S, [0.0] * 4 + [1.0] * 2])
    _, probs = attention(query, attention.preprocess_source(source, source, paddings))
    for b in range(B):
        length = int((paddings[b] == 0).sum())
        previous, cumulative = torch.zeros(S), torch.zeros(S)
        for t in range(T):
            expected = _reference_probs(
                attention, query[b, t], source[b], length, previous, cumulative
            )
            torch.testing.assert_close(probs[b, t, :length], expected)
            previous = probs[b, t]
            cumulative = cumulative + previous


def test_state_holds_previous_and_cumulative_alignments() -> None:
    attention = _attention("both")
    source, paddings = torch.randn(B, S, DK), torch.zeros(B, S)
    preprocessed = attention.preprocess_source(source, source, paddings)
    state = attention.init_state(preprocessed, B)
    assert state.previous_probs.shape == (B, S) and torch.all(state.previous_probs == 0)
    total = torch.zeros(B, S)
    for _ in range(3):
        _, probs, state = attention.extend_step(torch.randn(B, DQ), preprocessed, state)
        total = total + probs
        torch.testing.assert_close(state.previous_probs, probs)
    torch.testing.assert_close(state.cumulative_probs, total)


def test_feature_choice_is_settable_from_text() -> None:
    config = LocationSensitiveAttention.Config()
    config.set("location_features", "cumulative")
    assert config.location_features == "cumulative"
    assert "location_features = 'cumulative'" in config.to_text()
    with pytest.raises(ConfigError, match="location_features"):
        config.set("location_features", "next")


def test_bad_filters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="odd filter_width"):
        LocationSensitiveAttention.Config(filter_width=4).build()
    with pytest.raises(ConfigError, match="location_features"):
        LocationSensitiveAttention.Config(location_features="next").build()  # type: ignore[arg-type]
