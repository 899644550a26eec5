"""Tests for seqlab.layers.additive_attention (the shared contract: test_source_attention.py)."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.layers.additive_attention import AdditiveAttention


def test_matches_bahdanau_formula() -> None:
    torch.manual_seed(0)
    attention = AdditiveAttention.Config(query_dim=4, source_dim=3, hidden_dim=5).build()
    query, source, values = torch.randn(2, 3, 4), torch.randn(2, 6, 3), torch.randn(2, 6, 2)
    paddings = torch.tensor([[0.0] * 6, [0.0] * 4 + [1.0] * 2])
    context, probs = attention(query, attention.preprocess_source(source, values, paddings))

    w_q, w_k = attention.query_proj.weight, attention.source_proj.weight
    b_k, v = attention.source_proj.bias, attention.energy_weight
    for b in range(2):
        length = int((paddings[b] == 0).sum())
        for t in range(3):
            hidden = [w_q @ query[b, t] + w_k @ source[b, s] + b_k for s in range(length)]
            energies = torch.stack([v @ torch.tanh(h) for h in hidden])
            expected = energies.softmax(0)
            torch.testing.assert_close(probs[b, t, :length], expected)
            torch.testing.assert_close(context[b, t], expected @ values[b, :length])


def test_bad_dims_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="hidden_dim"):
        AdditiveAttention.Config(query_dim=4, source_dim=3, hidden_dim=0).build()
