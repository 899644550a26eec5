"""Tests for seqlab.layers.dropout."""

from __future__ import annotations

import pytest
import torch

from seqlab.layers.dropout import Dropout, dropout


def test_eval_mode_and_zero_probability_return_the_inputs() -> None:
    x = torch.randn(3, 4)
    layer = Dropout(0.3).eval()
    assert layer(x) is x
    assert Dropout(0.0).train()(x) is x


def test_drops_the_stated_fraction_and_scales_the_rest() -> None:
    torch.manual_seed(0)
    x = torch.rand(200_000) + 1.0  # no zeros of its own
    out = dropout(x, 0.25, training=True)
    dropped = out == 0
    # 200k Bernoulli(0.25) draws: the standard deviation of the fraction is about 0.001.
    assert abs(dropped.float().mean().item() - 0.25) < 0.005
    torch.testing.assert_close(out[~dropped], x[~dropped] / 0.75)


def test_same_seed_same_mask_and_gradient_is_the_mask() -> None:
    x = torch.randn(5, 7, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.5, training=True)
    torch.manual_seed(3)
    second = dropout(x, 0.5, training=True)
    torch.testing.assert_close(first, second)
    first.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, (first != 0).float() / 0.5)


def test_bfloat16_keeps_its_dtype() -> None:
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    assert dropout(x, 0.1, training=True).dtype == torch.bfloat16


@pytest.mark.parametrize("prob", [-0.1, 1.0])
def test_rejects_probabilities_outside_zero_one(prob: float) -> None:
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(prob)
