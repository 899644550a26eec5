"""Lingvo's clipping schedule: the cap and the phase at known steps."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.quant.clipping_schedule import ClippingSchedule


def schedule() -> ClippingSchedule:
    return ClippingSchedule.Config(
        clip_start_step=100, clip_end_step=300, quant_start_step=400, start_cap=8.0, end_cap=2.0
    ).build()


@pytest.mark.parametrize(
    ("step", "cap", "clipping", "quantizing"),
    [
        (0, 8.0, False, False),
        (99, 8.0, False, False),
        (100, 8.0, True, False),
        (200, 5.0, True, False),  # halfway: (8 + 2) / 2
        (250, 3.5, True, False),
        (300, 2.0, True, False),
        (399, 2.0, True, False),
        (400, 2.0, True, True),
        (10_000, 2.0, True, True),
    ],
)
def test_cap_and_phase_at_known_steps(
    step: int, cap: float, clipping: bool, quantizing: bool
) -> None:
    s = schedule()
    at = torch.tensor(step)
    assert s.cap(at).item() == pytest.approx(cap)
    assert bool(s.clipping(at)) is clipping
    assert bool(s.quantizing(at)) is quantizing


def test_max_int_follows_bits() -> None:
    assert schedule().max_int == 127
    assert ClippingSchedule.Config(bits=4).build().max_int == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"clip_start_step": 10, "clip_end_step": 5}, "clip_start_step <= clip_end_step"),
        ({"clip_end_step": 50, "quant_start_step": 10}, "quant_start_step"),
        ({"bits": 1}, "bits"),
        ({"start_cap": 1.0, "end_cap": 2.0}, "start_cap >= end_cap"),
    ],
)
def test_bad_schedules_are_errors_naming_the_fields(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClippingSchedule.Config(**overrides).build()
