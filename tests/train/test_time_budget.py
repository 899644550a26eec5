"""trainer.max_train_seconds: training stops on the clock, resumes count the time already spent,
and a follower job exits after the run's last checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seqlab.cli import main
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import list_checkpoints, load_checkpoint
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

STEP_SECONDS = 0.25
BUDGET_SECONDS = 1.0


def make_trainer(tiny_mt_trainer: Callable[..., Trainer], logdir: Path) -> Trainer:
    trainer = tiny_mt_trainer(
        logdir,
        "data.eval_limit=5",
        "trainer.max_steps=1000",
        f"trainer.max_train_seconds={BUDGET_SECONDS}",
        "trainer.checkpoint_every_steps=2",
    )
    collate = trainer.data.collate

    def slow_collate(examples: Any, indices: list[int]) -> Any:
        time.sleep(STEP_SECONDS)  # every step takes at least this long
        return collate(examples, indices)

    trainer.data.collate = slow_collate  # type: ignore[method-assign]
    return trainer


def test_training_stops_on_the_clock_and_resume_counts_spent_time(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    step = make_trainer(tiny_mt_trainer, tmp_path).train()
    assert 1 <= step <= BUDGET_SECONDS / STEP_SECONDS
    final = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert final[0] == step  # the last step is saved
    assert load_checkpoint(final[1])["train_seconds"] >= BUDGET_SECONDS
    # Resuming a run whose budget is spent trains no further.
    assert make_trainer(tiny_mt_trainer, tmp_path).train() == step

    # A follower exits after the last checkpoint although it is short of trainer.max_steps.
    assert main(["eval", "--logdir", str(tmp_path), "--follow", "--poll-seconds", "0.1"]) == 0
    assert (tmp_path / "eval_dev" / f"metrics-{step:08d}.json").exists()
