"""Tests for seqlab.layers.cross_entropy."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy


def _loss(label_smoothing: float = 0.1) -> LabelSmoothedCrossEntropy:
    return LabelSmoothedCrossEntropy.Config(label_smoothing=label_smoothing).build()


def test_matches_hand_computation() -> None:
    # One example, two real tokens and one padded token, V = 3.
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [5.0, -5.0, 0.0]]])
    labels = torch.tensor([[2, 0, 1]])
    paddings = torch.tensor([[0.0, 0.0, 1.0]])
    eps = 0.2
    log_z = math.log(1 + math.e + math.e**2)
    log_p0 = [0.0 - log_z, 1.0 - log_z, 2.0 - log_z]
    log_p1 = [-math.log(3.0)] * 3
    nll = [-log_p0[2], -log_p1[0]]
    # Label gets 1 - eps, each of the other two classes eps / 2.
    smoothed = [
        -(0.1 * log_p0[0] + 0.1 * log_p0[1] + 0.8 * log_p0[2]),
        -(0.8 * log_p1[0] + 0.1 * log_p1[1] + 0.1 * log_p1[2]),
    ]
    out = _loss(eps)(logits, labels, paddings)
    torch.testing.assert_close(out.loss, torch.tensor(sum(smoothed) / 2))
    torch.testing.assert_close(out.nll_sum, torch.tensor(sum(nll)))
    torch.testing.assert_close(out.num_tokens, torch.tensor(2.0))


def test_equals_cross_entropy_with_smoothed_targets() -> None:
    torch.manual_seed(0)
    b, t, v, eps = 2, 4, 7, 0.1
    logits, labels = torch.randn(b, t, v), torch.randint(0, v, (b, t))
    targets = torch.full((b, t, v), eps / (v - 1)).scatter(-1, labels[..., None], 1 - eps)
    expected = -(targets * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(_loss(eps)(logits, labels, torch.zeros(b, t)).loss, expected)


def test_no_smoothing_is_plain_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 4, 7), torch.randint(0, 7, (2, 4))
    out = _loss(0.0)(logits, labels, torch.zeros(2, 4))
    expected = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.nll_sum, expected * 8)


def test_padded_positions_contribute_nothing() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, requires_grad=True)
    labels = torch.randint(0, 7, (2, 4))
    paddings = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]])
    out = _loss()(logits, labels, paddings)
    out.loss.backward()
    assert logits.grad[paddings > 0].abs().sum() == 0
    changed_logits = torch.where(paddings[..., None] > 0, torch.full_like(logits, 1e4), logits)
    changed_labels = labels.masked_fill(paddings > 0, -100)
    changed = _loss()(changed_logits, changed_labels, paddings)
    for key in ("loss", "nll_sum", "num_tokens"):
        torch.testing.assert_close(changed[key], out[key])
    assert out.num_tokens.item() == 4


def test_all_padded_batch_is_zero_not_nan() -> None:
    out = _loss()(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
    assert out.loss.item() == 0.0 and out.num_tokens.item() == 0.0


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_gradient_equals_autograd_through_log_softmax(eps: float) -> None:
    """The fused backward pass: the gradients of the loss and of nll_sum, as autograd
    computes them through log_softmax, gather and sum (the loss computes in float32; a wrong
    term would be off by far more than its rounding)."""
    torch.manual_seed(0)
    b, t, v = 3, 5, 11
    logits = torch.randn(b, t, v)
    labels = torch.randint(0, v, (b, t))
    paddings = torch.zeros(b, t)
    paddings[1, 3:] = 1.0
    real = paddings < 0.5

    def reference(x: torch.Tensor) -> torch.Tensor:
        log_probs = x.log_softmax(-1)
        nll = -log_probs.gather(-1, labels.masked_fill(~real, 0)[..., None]).squeeze(-1)
        eps_i = eps / (v - 1)
        per_token = (1 - eps - eps_i) * nll - eps_i * log_probs.sum(-1)
        return 0.7 * (per_token * real).sum() / real.sum() + 0.3 * (nll * real).sum()

    x = logits.clone().requires_grad_()
    out = _loss(eps)(x, labels, paddings)
    (0.7 * out.loss + 0.3 * out.nll_sum).backward()
    y = logits.clone().requires_grad_()
    reference(y).backward()
    assert x.grad is not None and y.grad is not None
    torch.testing.assert_close(x.grad, y.grad, atol=1e-7, rtol=1e-5)
    assert torch.all(x.grad[1, 3:] == 0)


def test_a_second_backward_through_the_same_graph_is_refused() -> None:
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = _loss()(logits, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)).loss
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
