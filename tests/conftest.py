"""Fixtures shared across test packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip on a machine without an NVIDIA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU visible)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bible_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the tiny Bible runs, so the corpus is prepared once per session;
    ``$SEQLAB_TEST_CACHE_DIR`` names a prepared one instead (a machine without the Debian
    Bible packages, such as the GPU machine of scripts/gpu_check.sh)."""
    prepared = os.environ.get("SEQLAB_TEST_CACHE_DIR")
    return Path(prepared) if prepared else tmp_path_factory.mktemp("bible_cache")


@pytest.fixture(scope="session")
def two_step_run_sets(bible_cache_dir: Path) -> list[str]:
    """``--set`` values of a quick tiny run: 2 steps on 200 training examples, one thread,
    nothing saved or evaluated before the end (add the task's own settings)."""
    return [
        f"data.cache_dir={bible_cache_dir}",
        "data.train_limit=200",
        "data.eval_limit=4",
        "trainer.max_steps=2",
        "trainer.checkpoint_every_steps=0",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
    ]
