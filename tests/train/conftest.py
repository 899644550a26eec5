"""Fixtures shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.core.registry import get_experiment
from seqlab.train.trainer import Trainer


def _tiny_mt_trainer(cache_dir: Path, logdir: Path, *overrides: str) -> Trainer:
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={cache_dir}",
            "data.train_limit=200",
            "data.max_tokens=256",
            "trainer.checkpoint_every_steps=0",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            *overrides,
        ]
    )
    return Trainer(config, logdir, show_progress=False)


@pytest.fixture
def tiny_mt_trainer(bible_cache_dir: Path) -> Callable[..., Trainer]:
    """``tiny_mt_trainer(logdir, *overrides)``: a quiet ``transformer_tiny`` trainer on 200
    training pairs in 256-token batches, with no in-training checkpoints, evals or decodes
    unless ``overrides`` (applied last) ask for them."""
    return lambda logdir, *overrides: _tiny_mt_trainer(bible_cache_dir, logdir, *overrides)


# A short run with three checkpoints: steps 2, 4 and 6.
TINY_RUN = ("data.eval_limit=4", "trainer.max_steps=6", "trainer.checkpoint_every_steps=2")


@pytest.fixture(scope="session")
def tiny_run_dir(bible_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``tiny_mt_trainer`` run (``TINY_RUN``: 6 steps, 4 dev sentences) with
    checkpoints at steps 2, 4 and 6, trained once per session; tests that change its
    checkpoints work on a copy."""
    logdir = tmp_path_factory.mktemp("tiny_run")
    _tiny_mt_trainer(bible_cache_dir, logdir, *TINY_RUN).train()
    return logdir


@pytest.fixture
def tiny_run_trainer(bible_cache_dir: Path) -> Callable[[Path], Trainer]:
    """``tiny_run_trainer(logdir)``: the trainer of a run like ``tiny_run_dir``'s."""
    return lambda logdir: _tiny_mt_trainer(bible_cache_dir, logdir, *TINY_RUN)


class Interrupt(Exception):
    """Stands for a crash: raised inside the training loop, it skips the final checkpoint."""


@pytest.fixture
def train_until_crash() -> Callable[[Trainer, int], None]:
    """``train_until_crash(trainer, step)`` trains and crashes right after ``step``, so that
    only the checkpoints saved before it remain."""

    def run(trainer: Trainer, step: int) -> None:
        original_step = trainer.train_step

        def step_then_maybe_crash(indices: list[int] | None = None) -> dict[str, float]:
            out = original_step(indices)
            if trainer.step == step:
                raise Interrupt
            return out

        trainer.train_step = step_then_maybe_crash  # type: ignore[method-assign]
        with pytest.raises(Interrupt):
            trainer.train()

    return run
