"""The trainer reports the time it waits for data: in its metrics and TensorBoard summaries."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

STEPS = 3
DELAY_S = 0.3


def make_trainer(cache_dir: Path, logdir: Path, prefetch: int = 2) -> Trainer:
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={cache_dir}",
            "data.train_limit=200",
            "data.max_tokens=256",
            f"trainer.max_steps={STEPS}",
            "trainer.checkpoint_every_steps=0",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.log_every_steps=1",
            f"trainer.prefetch_batches={prefetch}",
        ]
    )
    return Trainer(config, logdir, show_progress=False)


def scalars(logdir: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(logdir / "train"))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def slow_down_collate(trainer: Trainer) -> None:
    collate = trainer.data.collate

    def slow_collate(examples: Any, indices: list[int]) -> Any:
        time.sleep(DELAY_S)  # a slow input pipeline
        return collate(examples, indices)

    trainer.data.collate = slow_collate  # type: ignore[method-assign]


def test_slow_data_shows_as_data_wait(bible_cache_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(bible_cache_dir, tmp_path, prefetch=0)
    slow_down_collate(trainer)
    trainer.train()
    waits = scalars(tmp_path, "data_wait_seconds")
    fractions = scalars(tmp_path, "data_wait_fraction")
    assert len(waits) == len(fractions) == STEPS
    # Each step (one per log line) waited at least the delay, and that was a real share of it.
    assert all(DELAY_S <= w < DELAY_S + 5.0 for w in waits), waits
    assert all(0.0 < f <= 1.0 for f in fractions), fractions


def test_prefetching_hides_slow_data_behind_the_steps(
    bible_cache_dir: Path, tmp_path: Path
) -> None:
    trainer = make_trainer(bible_cache_dir, tmp_path, prefetch=2)
    slow_down_collate(trainer)
    compute_loss = trainer.task.compute_loss

    def slow_step(*args: Any) -> Any:
        time.sleep(2 * DELAY_S)  # a step longer than making a batch: a GPU's, say
        return compute_loss(*args)

    trainer.task.compute_loss = slow_step  # type: ignore[method-assign]
    trainer.train()
    waits = scalars(tmp_path, "data_wait_seconds")
    assert len(waits) == STEPS
    # The first batch is waited for in full; the next ones were collated during the steps.
    assert DELAY_S <= waits[0] < DELAY_S + 5.0, waits
    assert all(w < DELAY_S / 2 for w in waits[1:]), waits


def test_fast_data_waits_little(bible_cache_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(bible_cache_dir, tmp_path)
    trainer.train()
    waits = scalars(tmp_path, "data_wait_seconds")
    fractions = scalars(tmp_path, "data_wait_fraction")
    assert len(fractions) == STEPS
    # Collating a tiny batch takes milliseconds; the step itself far longer.
    assert all(0.0 <= w < DELAY_S for w in waits), waits
    assert all(0.0 <= f < 0.5 for f in fractions), fractions
