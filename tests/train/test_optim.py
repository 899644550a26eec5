"""Tests for seqlab.train.optim."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from seqlab.train.optim import Adam, LearningRateSchedule

PEAK = 1e-3


def _schedule(kind: str, default_total_steps: int = 0, **kwargs: object) -> LearningRateSchedule:
    values = {"kind": kind, "peak_learning_rate": PEAK, "warmup_steps": 100, **kwargs}
    return LearningRateSchedule(LearningRateSchedule.Config(**values), default_total_steps)


@pytest.mark.parametrize("kind", ["inverse_sqrt", "cosine", "linear", "constant"])
def test_warmup_is_linear_from_zero(kind: str) -> None:
    schedule = _schedule(kind, total_steps=1000)
    assert schedule(1) == pytest.approx(PEAK / 100)
    assert schedule(0) == schedule(1)  # steps are 1-based; 0 is treated as 1
    assert schedule(25) == pytest.approx(PEAK / 4)
    assert schedule(50) == pytest.approx(PEAK / 2)
    assert schedule(100) == pytest.approx(PEAK)
    warmup = [schedule(s) for s in range(1, 101)]
    assert all(b > a for a, b in pairwise(warmup))


def test_inverse_sqrt() -> None:
    schedule = _schedule("inverse_sqrt")
    assert schedule(400) == pytest.approx(PEAK / 2)
    assert schedule(10_000) == pytest.approx(PEAK / 10)
    assert schedule(101) == pytest.approx(PEAK * math.sqrt(100 / 101))


def test_inverse_sqrt_without_warmup_starts_at_peak() -> None:
    schedule = _schedule("inverse_sqrt", warmup_steps=0)
    assert schedule(1) == pytest.approx(PEAK)
    assert schedule(4) == pytest.approx(PEAK / 2)


@pytest.mark.parametrize("final_fraction", [0.0, 0.1])
def test_cosine(final_fraction: float) -> None:
    schedule = _schedule("cosine", total_steps=1100, final_fraction=final_fraction)
    final = final_fraction * PEAK
    assert schedule(100) == pytest.approx(PEAK)
    assert schedule(600) == pytest.approx(final + (PEAK - final) * 0.5)
    assert schedule(350) == pytest.approx(final + (PEAK - final) * (1 + math.cos(math.pi / 4)) / 2)
    assert schedule(1100) == pytest.approx(final, abs=1e-12)
    assert schedule(5000) == pytest.approx(final, abs=1e-12)
    decay = [schedule(s) for s in range(100, 1200, 10)]
    assert all(b <= a for a, b in pairwise(decay))


@pytest.mark.parametrize("final_fraction", [0.0, 0.2])
def test_linear(final_fraction: float) -> None:
    schedule = _schedule("linear", total_steps=1100, final_fraction=final_fraction)
    final = final_fraction * PEAK
    assert schedule(100) == pytest.approx(PEAK)
    assert schedule(350) == pytest.approx(final + (PEAK - final) * 0.75)
    assert schedule(600) == pytest.approx(final + (PEAK - final) * 0.5)
    assert schedule(1100) == pytest.approx(final, abs=1e-12)
    assert schedule(2000) == pytest.approx(final, abs=1e-12)


def test_constant_after_warmup() -> None:
    schedule = _schedule("constant")
    assert [schedule(s) for s in (100, 101, 10_000)] == pytest.approx([PEAK] * 3)


def test_total_steps_defaults_to_the_given_default() -> None:
    schedule = _schedule("cosine", default_total_steps=1100)
    assert schedule.total_steps == 1100
    assert schedule(600) == pytest.approx(PEAK / 2)
    assert _schedule("cosine", default_total_steps=1100, total_steps=300).total_steps == 300


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_without_total_steps_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match=f"a {kind} schedule needs total_steps > 0"):
        _schedule(kind)


def test_bad_kind_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        _schedule("exponential", total_steps=10)
    message = str(info.value)
    assert "'exponential'" in message
    assert "inverse_sqrt, cosine, linear or constant" in message


def test_adam_builds_adamw_from_config() -> None:
    params = list(torch.nn.Linear(2, 2).parameters())
    config = Adam.Config(beta1=0.8, beta2=0.9, epsilon=1e-6, weight_decay=0.01)
    optimizer = config.build(params, lr=0.5)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.5
    assert group["betas"] == (0.8, 0.9)
    assert group["eps"] == 1e-6
    assert group["weight_decay"] == 0.01
    assert group["params"] == params
