"""Shared pieces of the export tests: a tiny model, its greedy settings, a trained run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.data.mt_data import MTExamples, collate
from seqlab.decoding.beam_search import BeamSearch
from seqlab.models.mt.transformer_model import TransformerMT


@pytest.fixture
def greedy() -> BeamSearch.Config:
    """Beam search settings that make it greedy search."""
    return BeamSearch.Config(beam_size=1, length_penalty_alpha=0.0)


@pytest.fixture
def random_tiny_mt() -> TransformerMT:
    """transformer_tiny's task, randomly initialized with seed 0, in eval mode."""
    torch.manual_seed(0)
    task = get_experiment("mt.bible_en_es.transformer_tiny").task.build()
    return task.eval()


@pytest.fixture
def random_sources(random_tiny_mt: TransformerMT) -> list[list[int]]:
    """Eight source id lists of varied lengths, each ending in EOS (3)."""
    generator = torch.Generator().manual_seed(0)
    vocab_size = random_tiny_mt.config.embedding.vocab_size
    lengths = torch.randint(2, 12, (8,), generator=generator).tolist()
    return [torch.randint(4, vocab_size, (n,), generator=generator).tolist() + [3] for n in lengths]


def decode_with(
    task: TransformerMT, sources: list[list[int]], search: BeamSearch.Config
) -> list[list[int]]:
    """The task's own decoding of source id lists with the given search settings."""
    task.config.beam_search = search
    examples = MTExamples(sources, [[] for _ in sources], [""] * len(sources), [""] * len(sources))
    with torch.no_grad():
        return task.decode(collate(examples, list(range(len(sources))))).ids


@pytest.fixture
def decode_with_task() -> Callable[..., list[list[int]]]:
    """``decode_with_task(task, sources, search)``: seqlab's own decoding, as reference."""
    return decode_with


@pytest.fixture(scope="session")
def trained_logdir(bible_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """transformer_tiny trained for 80 steps on a slice of the Bible (once per session)."""
    if not (DEFAULT_SWORD_ROOT / "mods.d").is_dir():
        pytest.skip("Bible SWORD modules not installed (scripts/setup.sh installs them)")
    from seqlab.train.trainer import Trainer

    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={bible_cache_dir}",
            "data.train_limit=2000",
            "data.eval_limit=12",
            "trainer.max_steps=80",
            "trainer.checkpoint_every_steps=0",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
        ]
    )
    logdir = tmp_path_factory.mktemp("export_run")
    Trainer(config, logdir, show_progress=False).train()
    return logdir
