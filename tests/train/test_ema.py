"""Tests for seqlab.train.ema."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.train.checkpoint import CheckpointError
from seqlab.train.ema import EMA_CHECKPOINT_KEY, ExponentialMovingAverage, model_state


def _named(*values: list[float]) -> list[tuple[str, torch.nn.Parameter]]:
    return [(f"p{i}", torch.nn.Parameter(torch.tensor(v))) for i, v in enumerate(values)]


def _set(param: torch.nn.Parameter, values: list[float]) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values))


def test_average_equals_a_hand_computation() -> None:
    named = _named([1.0, 2.0])
    ((_, weight),) = named
    ema = ExponentialMovingAverage.Config(decay=0.9, start_step=3).build(named)
    # Updates 1 and 2 come before start_step: the average follows the weights.
    _set(weight, [5.0, 6.0])
    ema.update(1)
    _set(weight, [3.0, 4.0])
    ema.update(2)
    assert ema.averages[0].tolist() == [3.0, 4.0]
    # From update 3: average = 0.9 * average + 0.1 * weights.
    _set(weight, [13.0, -6.0])
    ema.update(3)  # [0.9 * 3 + 1.3, 0.9 * 4 - 0.6] = [4.0, 3.0]
    _set(weight, [-6.0, 13.0])
    ema.update(4)  # [3.6 - 0.6, 2.7 + 1.3] = [3.0, 4.0]
    assert ema.averages[0].tolist() == pytest.approx([3.0, 4.0], abs=1e-6)
    _set(weight, [3.0, 4.0])
    ema.update(5)
    assert ema.averages[0].tolist() == pytest.approx([3.0, 4.0], abs=1e-6)
    assert weight.tolist() == [3.0, 4.0]  # the weights themselves are untouched


def test_average_from_the_first_update_starts_at_the_initial_weights() -> None:
    named = _named([10.0])
    ema = ExponentialMovingAverage.Config(decay=0.5).build(named)
    _set(named[0][1], [0.0])
    ema.update(1)
    ema.update(2)
    assert ema.averages[0].tolist() == pytest.approx([2.5])  # 10 / 2 / 2


def test_off_by_default() -> None:
    named = _named([1.0])
    ema = ExponentialMovingAverage.Config().build(named)
    assert not ema.enabled
    assert ema.averages == []
    ema.update(1)
    with ema.swapped_in():
        assert named[0][1].tolist() == [1.0]


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match=f"decay' must be >= 0 and < 1, got {decay}"):
        ExponentialMovingAverage.Config(decay=decay).build(_named([1.0]))


def test_swapped_in_holds_the_averages_and_restores_the_weights_even_on_error() -> None:
    named = _named([1.0, 2.0], [3.0])
    ema = ExponentialMovingAverage.Config(decay=0.5).build(named)
    _set(named[0][1], [3.0, 6.0])
    _set(named[1][1], [5.0])
    ema.update(1)
    with pytest.raises(RuntimeError, match="inside"), ema.swapped_in():
        assert named[0][1].tolist() == [2.0, 4.0]
        assert named[1][1].tolist() == [4.0]
        raise RuntimeError("inside")
    assert named[0][1].tolist() == [3.0, 6.0]
    assert named[1][1].tolist() == [5.0]


def test_state_dict_round_trip() -> None:
    first = ExponentialMovingAverage.Config(decay=0.9).build(_named([1.0], [2.0, 3.0]))
    first.averages[1].fill_(7.0)
    state = {k: v.clone() for k, v in first.state_dict().items()}
    assert list(state) == ["p0", "p1"]
    second = ExponentialMovingAverage.Config(decay=0.9).build(_named([0.0], [0.0, 0.0]))
    second.load_state_dict(state)
    assert [a.tolist() for a in second.averages] == [[1.0], [7.0, 7.0]]
    with pytest.raises(KeyError, match="p1"):
        second.load_state_dict({"p0": torch.tensor([1.0])})


def test_model_state_from_a_checkpoint_payload() -> None:
    payload = {
        "model": {"w": torch.tensor([1.0]), "buffer": torch.tensor([9.0])},
        EMA_CHECKPOINT_KEY: {"w": torch.tensor([2.0])},
    }
    path = Path("ckpt-00000010.pt")
    assert model_state(payload, path, use_ema=False) is payload["model"]
    averaged = model_state(payload, path, use_ema=True)
    assert {k: v.item() for k, v in averaged.items()} == {"w": 2.0, "buffer": 9.0}
    with pytest.raises(CheckpointError, match=r"ckpt-00000010.pt holds no moving average"):
        model_state({"model": payload["model"]}, path, use_ema=True)
