"""Tests for seqlab.layers.feed_forward."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from seqlab.layers.feed_forward import FeedForward


def _ffn(activation: str = "relu", dropout_prob: float = 0.0) -> FeedForward:
    torch.manual_seed(0)
    return FeedForward.Config(
        model_dim=8, hidden_dim=16, activation=activation, dropout_prob=dropout_prob
    ).build()


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_matches_manual_computation(activation: str) -> None:
    ffn = _ffn(activation)
    x = torch.randn(2, 5, 8)
    act = F.relu if activation == "relu" else F.gelu
    hidden = act(x @ ffn.input_proj.weight.T + ffn.input_proj.bias)
    expected = hidden @ ffn.output_proj.weight.T + ffn.output_proj.bias
    out = ffn(x)
    assert out.shape == (2, 5, 8)
    torch.testing.assert_close(out, expected)


def test_positions_are_independent() -> None:
    ffn = _ffn()
    x = torch.randn(2, 5, 8)
    changed = x.clone()
    changed[:, 3:] = torch.randn(2, 2, 8)
    torch.testing.assert_close(ffn(x)[:, :3], ffn(changed)[:, :3])


def test_dropout_only_in_training() -> None:
    ffn = _ffn(dropout_prob=0.5)
    x = torch.randn(2, 5, 8)
    ffn.eval()
    torch.testing.assert_close(ffn(x), ffn(x))
    ffn.train()
    assert not torch.allclose(ffn(x), ffn(x))


def test_gradients_reach_every_parameter() -> None:
    ffn = _ffn()
    ffn(torch.randn(2, 5, 8)).square().sum().backward()
    for name, p in ffn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_state_dict_round_trip() -> None:
    ffn = _ffn()
    other = FeedForward.Config(model_dim=8, hidden_dim=16).build()
    other.load_state_dict(ffn.state_dict())
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(other(x), ffn(x))


def test_unknown_activation_is_an_error() -> None:
    with pytest.raises(ValueError, match="activation"):
        FeedForward.Config(model_dim=8, hidden_dim=16, activation="tanh").build()
