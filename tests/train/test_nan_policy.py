"""trainer.nan_policy: a NaN loss or an infinite gradient stops training with an error naming
the step (and the parameters), or with ``skip`` skips and counts the step and trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import list_checkpoints, load_checkpoint
from seqlab.train.trainer import Trainer, TrainingDivergedError

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

BAD_STEP = 3
MAX_STEPS = 5


@pytest.fixture
def cache_dir(bible_cache_dir: Path) -> Path:
    return bible_cache_dir


def make_trainer(cache_dir: Path, logdir: Path, *overrides: str) -> Trainer:
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={cache_dir}",
            "data.train_limit=200",
            "data.max_tokens=256",
            "data.eval_limit=10",
            f"trainer.max_steps={MAX_STEPS}",
            "trainer.checkpoint_every_steps=0",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.log_every_steps=1",
            *overrides,
        ]
    )
    return Trainer(config, logdir, show_progress=False)


def nan_loss_at(trainer: Trainer, step: int) -> None:
    """Makes the task's loss NaN at ``step`` (1-based, as the trainer reports steps)."""
    compute_loss = trainer.task.compute_loss

    def patched(batch: Any, predictions: Any) -> Any:
        loss, metrics = compute_loss(batch, predictions)
        if trainer.step + 1 == step:
            loss = loss * float("nan")
        return loss, metrics

    trainer.task.compute_loss = patched  # type: ignore[method-assign]


def inf_gradient_at(trainer: Trainer, step: int) -> str:
    """Makes one parameter's gradient infinite at ``step``; returns the parameter's name."""
    name, param = list(trainer.task.named_parameters())[1]

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("inf")) if trainer.step + 1 == step else grad

    param.register_hook(hook)
    return name


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.task.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_naming_the_step(cache_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(cache_dir, tmp_path)
    nan_loss_at(trainer, BAD_STEP)
    with pytest.raises(TrainingDivergedError, match=rf"^step {BAD_STEP}: loss is nan"):
        trainer.train()
    assert trainer.step == BAD_STEP - 1


@pytest.mark.parametrize("clip", ["1.0", "0"])
def test_inf_gradient_stops_naming_the_step_and_parameter(
    cache_dir: Path, tmp_path: Path, clip: str
) -> None:
    trainer = make_trainer(cache_dir, tmp_path, f"trainer.clip_gradient_norm={clip}")
    name = inf_gradient_at(trainer, BAD_STEP)
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith(f"step {BAD_STEP}: gradient norm is inf"), message
    # Only the parameter whose gradient is infinite is named, not every one clipping touched.
    assert message.split("non-finite gradients in: ")[1].startswith(f"{name})"), message
    assert "nan_policy=skip" in message


@pytest.mark.parametrize("fault", ["loss", "gradient"])
def test_skip_policy_skips_counts_and_continues(
    cache_dir: Path, tmp_path: Path, fault: str
) -> None:
    trainer = make_trainer(cache_dir, tmp_path, "trainer.nan_policy=skip")
    if fault == "loss":
        nan_loss_at(trainer, BAD_STEP)
    else:
        inf_gradient_at(trainer, BAD_STEP)
    history = []
    for step in range(1, MAX_STEPS + 1):
        before = weights(trainer)
        metrics = trainer.train_step(next(trainer.stream))
        after = weights(trainer)
        assert trainer.step == step
        # The bad step leaves the weights alone; every other step changes them.
        assert same(before, after) == (step == BAD_STEP)
        assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
        history.append(metrics["skipped_steps"])
    assert history == [0.0] * (BAD_STEP - 1) + [1.0] * (MAX_STEPS - BAD_STEP + 1)
    assert trainer.skipped_steps == 1


def test_skip_policy_in_summaries_and_checkpoint(cache_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(cache_dir, tmp_path, "trainer.nan_policy=skip")
    nan_loss_at(trainer, BAD_STEP)
    assert trainer.train() == MAX_STEPS
    events = EventAccumulator(str(tmp_path / "train"))
    events.Reload()
    skipped = {e.step: e.value for e in events.Scalars("skipped_steps")}
    assert skipped == {s: float(s >= BAD_STEP) for s in range(1, MAX_STEPS + 1)}
    _, path = list_checkpoints(trainer.context.checkpoint_dir)[-1]
    assert load_checkpoint(path)["skipped_steps"] == 1
    # A resumed trainer keeps counting from the checkpoint.
    assert make_trainer(cache_dir, tmp_path, "trainer.nan_policy=skip").restore()
