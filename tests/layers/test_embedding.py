"""Tests for seqlab.layers.embedding."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.layers.embedding import (
    AbsolutePositions,
    LearnedPositions,
    SinusoidalPositions,
    TokenEmbedding,
)


def _embedding(vocab_size: int = 11, model_dim: int = 8) -> TokenEmbedding:
    torch.manual_seed(0)
    return TokenEmbedding.Config(vocab_size=vocab_size, model_dim=model_dim).build()


def test_token_embedding_shapes_and_scale() -> None:
    emb = _embedding()
    ids = torch.randint(0, 11, (2, 5))
    out = emb(ids)
    assert out.shape == (2, 5, 8)
    torch.testing.assert_close(out, emb.weight[ids] * math.sqrt(8))


def test_token_embedding_unscaled() -> None:
    emb = TokenEmbedding.Config(vocab_size=5, model_dim=4, scale_by_sqrt_dim=False).build()
    ids = torch.tensor([[0, 4]])
    torch.testing.assert_close(emb(ids), emb.weight[ids])


def test_token_embedding_init_std() -> None:
    torch.manual_seed(0)
    emb = TokenEmbedding.Config(vocab_size=4000, model_dim=16).build()
    assert abs(emb.weight.std().item() - 16**-0.5) < 0.01


def test_token_embedding_logits_reuse_matrix() -> None:
    emb = _embedding()
    x = torch.randn(2, 3, 8)
    logits = emb.logits(x)
    assert logits.shape == (2, 3, 11)
    torch.testing.assert_close(logits, x @ emb.weight.T)


def test_token_embedding_positions_are_independent() -> None:
    emb = _embedding()
    ids = torch.randint(0, 11, (2, 5))
    changed = ids.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % 11
    torch.testing.assert_close(emb(ids)[:, :3], emb(changed)[:, :3])


def test_token_embedding_gradients_from_input_and_output_use() -> None:
    emb = _embedding()
    ids = torch.tensor([[1, 2]])
    emb(ids).sum().backward()
    input_grad = emb.weight.grad.clone()
    assert input_grad[1].abs().sum() > 0 and input_grad[3].abs().sum() == 0
    emb.zero_grad()
    emb.logits(torch.randn(1, 2, 8)).sum().backward()
    assert emb.weight.grad[3].abs().sum() > 0


def test_token_embedding_state_dict_round_trip() -> None:
    emb = _embedding()
    other = TokenEmbedding.Config(vocab_size=11, model_dim=8).build()
    other.load_state_dict(emb.state_dict())
    ids = torch.randint(0, 11, (2, 5))
    torch.testing.assert_close(other(ids), emb(ids))


def test_sinusoidal_positions_values() -> None:
    positions = SinusoidalPositions.Config(model_dim=6, max_length=16).build()
    table = positions(10)
    assert table.shape == (10, 6)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    # Timescales 1, 100, 10000 for D = 6: channel i is sin(p / 10000**(i / 2)).
    p = 7.0
    expected = [math.sin(p), math.sin(p / 100), math.sin(p / 1e4)]
    expected += [math.cos(p), math.cos(p / 100), math.cos(p / 1e4)]
    torch.testing.assert_close(table[7], torch.tensor(expected))


def test_sinusoidal_positions_offset_and_beyond_cache() -> None:
    cached = SinusoidalPositions.Config(model_dim=8, max_length=64).build()
    short = SinusoidalPositions.Config(model_dim=8, max_length=4).build()
    torch.testing.assert_close(cached(5, offset=3), cached(8)[3:])
    torch.testing.assert_close(short(20, offset=2), cached(22)[2:])
    torch.testing.assert_close(short(1, offset=40), cached(1, offset=40))


def test_sinusoidal_positions_not_in_state_dict() -> None:
    assert SinusoidalPositions.Config(model_dim=8).build().state_dict() == {}


def test_sinusoidal_positions_odd_dim_is_an_error() -> None:
    with pytest.raises(ConfigError, match="even"):
        SinusoidalPositions.Config(model_dim=7).build()


def test_learned_positions_shapes_offset_and_init() -> None:
    torch.manual_seed(0)
    positions = LearnedPositions.Config(model_dim=16, max_length=500).build()
    table = positions(7)
    assert table.shape == (7, 16)
    torch.testing.assert_close(table, positions.weight[:7])
    torch.testing.assert_close(positions(3, offset=4), positions.weight[4:7])
    assert abs(positions.weight.std().item() - 16**-0.5) < 0.02


def test_learned_positions_past_the_table_are_an_error() -> None:
    positions = LearnedPositions.Config(model_dim=8, max_length=6).build()
    assert positions(1, offset=5).shape == (1, 8)
    with pytest.raises(ValueError, match="max_length = 6"):
        positions(2, offset=5)


def test_learned_positions_gradients_and_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    positions = LearnedPositions.Config(model_dim=8, max_length=6).build()
    positions(3, offset=1).square().sum().backward()
    grad = positions.weight.grad
    assert grad[1:4].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[4:].abs().sum() == 0
    other = LearnedPositions.Config(model_dim=8, max_length=6).build()
    other.load_state_dict(positions.state_dict())
    torch.testing.assert_close(other(6), positions(6))


def test_both_position_configs_are_absolute_positions() -> None:
    for config in (SinusoidalPositions.Config(), LearnedPositions.Config()):
        assert isinstance(config, AbsolutePositions.Config)
        assert isinstance(config.build(), AbsolutePositions)
