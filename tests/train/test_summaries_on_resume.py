"""A resumed run's TensorBoard events: each step once, as the resumed run logged it, although
the crashed run had logged steps past its last checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def logged(job_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every ``tag`` event TensorBoard shows for ``job_dir``."""
    events = EventAccumulator(str(job_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_steps_logged_after_the_last_checkpoint_are_shown_once(
    tiny_mt_trainer: Callable[..., Trainer],
    train_until_crash: Callable[[Trainer, int], None],
    tmp_path: Path,
) -> None:
    settings = (
        "trainer.max_steps=8",
        "trainer.log_every_steps=2",
        "trainer.checkpoint_every_steps=4",
        "trainer.eval_every_steps=2",
        "data.eval_limit=4",
    )
    train_until_crash(tiny_mt_trainer(tmp_path, *settings), 7)  # logged 2, 4, 6; saved 4
    crashed = dict(logged(tmp_path / "train", "loss"))
    crashed_speeds = dict(logged(tmp_path / "train", "tokens_per_second"))
    assert sorted(crashed) == [2, 4, 6]
    resumed = tiny_mt_trainer(tmp_path, *settings)
    assert resumed.train() == 8
    train = logged(tmp_path / "train", "loss")
    assert [step for step, _ in train] == [2, 4, 6, 8]
    assert dict(train)[4] == crashed[4]
    # Step 6 as the resumed run logged it: its loss equals the crashed run's (a resume is
    # bitwise identical), so the wall-clock rate tells the two apart.
    speeds = dict(logged(tmp_path / "train", "tokens_per_second"))
    assert speeds[4] == crashed_speeds[4] and speeds[6] != crashed_speeds[6]
    assert [step for step, _ in logged(tmp_path / "eval_dev", "loss")] == [2, 4, 6, 8]
