"""Fixtures shared across test packages."""

from __future__ import annotations

import contextlib
import io
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
def greedy_tiny_logdir(bible_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logdir of transformer_tiny trained 2 steps by ``seqlab train``: greedy decoding of at
    most source length + 3 tokens, so that decoding is fast; 4 dev pairs."""
    from seqlab.cli import main

    logdir = tmp_path_factory.mktemp("greedy_tiny")
    sets = [
        f"data.cache_dir={bible_cache_dir}",
        "data.train_limit=200",
        "data.eval_limit=4",
        "trainer.max_steps=2",
        "trainer.checkpoint_every_steps=0",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
        "task.beam_search.beam_size=1",
        "task.beam_search.max_decode_length_ratio=1.0",
        "task.beam_search.max_decode_length_offset=3",
    ]
    args = ["train", "--experiment", "mt.bible_en_es.transformer_tiny", "--logdir", str(logdir)]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    return logdir
