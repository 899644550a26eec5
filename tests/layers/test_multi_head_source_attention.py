"""Tests for seqlab.layers.multi_head_source_attention (contract: test_source_attention.py)."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.layers.additive_attention import AdditiveAttention
from seqlab.layers.dot_product_attention import DotProductAttention
from seqlab.layers.multi_head_source_attention import (
    MultiHeadSourceAttention,
    multi_head_source_attention_config,
)

B, T, S, DQ, DK, DV, HIDDEN, H, OUT = 2, 3, 5, 6, 4, 3, 8, 2, 7


def test_matches_per_head_loop() -> None:
    torch.manual_seed(0)
    attention = multi_head_source_attention_config(
        AdditiveAttention.Config(hidden_dim=5), query_dim=DQ, source_dim=DK, value_dim=DV,
        hidden_dim=HIDDEN, num_heads=H, output_dim=OUT,
    ).build()  # fmt: skip
    query, source, values = torch.randn(B, T, DQ), torch.randn(B, S, DK), torch.randn(B, S, DV)
    paddings = torch.tensor([[0.0] * S, [0.0] * 2 + [1.0] * 3])
    context, probs = attention(query, attention.preprocess_source(source, values, paddings))

    head = HIDDEN // H
    q, k, v = attention.query_proj(query), attention.key_proj(source), attention.value_proj(values)
    head_contexts, head_probs = [], []
    for h in range(H):
        sl = slice(h * head, (h + 1) * head)
        inner = attention.inner
        preprocessed = inner.preprocess_source(k[..., sl], v[..., sl], paddings)
        head_context, p = inner(q[..., sl], preprocessed)
        head_contexts.append(head_context)
        head_probs.append(p)
    expected = attention.output_proj(torch.cat(head_contexts, -1))
    torch.testing.assert_close(context, expected)
    torch.testing.assert_close(probs, torch.stack(head_probs).mean(0))
    assert context.shape == (B, T, OUT)


def test_config_helper_fills_inner_dims_and_keeps_the_rest() -> None:
    inner = DotProductAttention.Config(per_dim_scale=True)
    config = multi_head_source_attention_config(
        inner, query_dim=DQ, source_dim=DK, hidden_dim=HIDDEN, num_heads=4
    )
    assert (config.inner.query_dim, config.inner.source_dim) == (2, 2)
    assert config.inner.per_dim_scale and inner.query_dim == 1024  # the argument is not changed
    assert (config.value_dim, config.output_dim) == (DK, HIDDEN)
    assert "inner.cls = 'DotProductAttention'" in config.to_text()
    assert config.build().inner.per_dim_scale is not None


def test_inconsistent_dims_are_config_errors_naming_the_keys() -> None:
    config = multi_head_source_attention_config(
        AdditiveAttention.Config(), query_dim=DQ, source_dim=DK, hidden_dim=HIDDEN, num_heads=H
    )
    config.inner.source_dim = 3
    with pytest.raises(ConfigError, match=r"inner\.source_dim is 3 .* = 4"):
        config.build()
    with pytest.raises(ConfigError, match="divide hidden_dim"):
        MultiHeadSourceAttention.Config(hidden_dim=10, num_heads=4).build()


def test_wrong_value_width_is_an_error() -> None:
    attention = multi_head_source_attention_config(
        AdditiveAttention.Config(), query_dim=DQ, source_dim=DK, value_dim=DV,
        hidden_dim=HIDDEN, num_heads=H,
    ).build()  # fmt: skip
    with pytest.raises(ValueError, match="value_dim=3"):
        attention.preprocess_source(torch.randn(B, S, DK), torch.randn(B, S, 5), torch.zeros(B, S))
