"""Tests for seqlab.layers.dot_product_attention (the contract: test_source_attention.py)."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.layers.dot_product_attention import DotProductAttention

B, T, S, D = 2, 3, 5, 4


def _inputs() -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(B, T, D, generator=generator)
    source = torch.randn(B, S, D, generator=generator)
    paddings = torch.tensor([[0.0] * S, [0.0] * 3 + [1.0] * 2])
    return query, source, paddings


def test_matches_scaled_dot_product() -> None:
    attention = DotProductAttention.Config(query_dim=D, source_dim=D).build()
    assert not list(attention.parameters())
    query, source, paddings = _inputs()
    context, probs = attention(query, attention.preprocess_source(source, source, paddings))
    mask = (paddings > 0)[:, None, :]
    expected = (query @ source.transpose(1, 2) / math.sqrt(D)).masked_fill(mask, -math.inf)
    expected = expected.softmax(-1)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(context, expected @ source)

    unscaled = DotProductAttention.Config(query_dim=D, source_dim=D, scale_by_sqrt_dim=False)
    attention = unscaled.build()
    _, probs = attention(query, attention.preprocess_source(source, source, paddings))
    expected = (query @ source.transpose(1, 2)).masked_fill(mask, -math.inf).softmax(-1)
    torch.testing.assert_close(probs, expected)


def test_per_dim_scale_starts_at_one_over_sqrt_dim_and_learns() -> None:
    query, source, paddings = _inputs()
    plain = DotProductAttention.Config(query_dim=D, source_dim=D).build()
    scaled = DotProductAttention.Config(query_dim=D, source_dim=D, per_dim_scale=True).build()
    outputs = [a(query, a.preprocess_source(source, source, paddings)) for a in (plain, scaled)]
    torch.testing.assert_close(outputs[0], outputs[1])
    with torch.no_grad():
        scaled.per_dim_scale[0] = 2.0  # only the first query dimension gets a larger weight
    _, probs = scaled(query, scaled.preprocess_source(source, source, paddings))
    factor = torch.ones(D)
    factor[0] = torch.nn.functional.softplus(torch.tensor(2.0)) / math.log(2.0)
    energies = (query * factor) @ source.transpose(1, 2) / math.sqrt(D)
    expected = energies.masked_fill((paddings > 0)[:, None, :], -math.inf).softmax(-1)
    torch.testing.assert_close(probs, expected)


def test_project_source_is_luong_general() -> None:
    torch.manual_seed(0)
    attention = DotProductAttention.Config(
        query_dim=D, source_dim=3, project_source=True, scale_by_sqrt_dim=False
    ).build()
    query, _, paddings = _inputs()
    source = torch.randn(B, S, 3)
    _, probs = attention(query, attention.preprocess_source(source, source, paddings))
    energies = query @ attention.source_proj.weight @ source.transpose(1, 2)
    expected = energies.masked_fill((paddings > 0)[:, None, :], -math.inf).softmax(-1)
    torch.testing.assert_close(probs, expected)


def test_unequal_dims_without_projection_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="project_source"):
        DotProductAttention.Config(query_dim=4, source_dim=3).build()
