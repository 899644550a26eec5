"""Small batches for the experiment tests: one per kind of input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from seqlab.core.nested_map import NestedMap
from seqlab.data.asr_data import batch_from_waveforms
from seqlab.data.mt_data import MTExamples, collate
from seqlab.models.multi_task import MultiTaskModel
from seqlab.train.experiment import ExperimentConfig


@pytest.fixture
def text_batch() -> Callable[[ExperimentConfig], NestedMap]:
    return _first_task_batch


@pytest.fixture
def audio_batch() -> Callable[[ExperimentConfig], NestedMap]:
    return _audio_batch


def _first_task_batch(config: ExperimentConfig) -> NestedMap:
    """Three random sentence pairs of 5, 9 and 3 tokens (plus EOS), collated; for a
    multi-task experiment, of its first task (the others share or mirror it)."""
    is_multi_task = isinstance(config.task, MultiTaskModel.Config)
    task_name = next(iter(config.task.tasks)) if is_multi_task else ""
    task_config = config.task.tasks[task_name] if is_multi_task else config.task
    data_config = config.data.tasks[task_name] if is_multi_task else config.data
    vocab = task_config.embedding.vocab_size
    assert data_config.tokenizer.vocab_size == vocab
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in (5, 9, 3)]
    examples = MTExamples(
        source_ids=[r + [3] for r in rows],
        target_ids=[r[::-1] for r in rows],
        source_text=["x"] * 3,
        target_text=["y"] * 3,
    )
    batch = collate(examples, [0, 1, 2])
    if is_multi_task:
        batch.task = task_name
    return batch


def _audio_batch(config: ExperimentConfig) -> NestedMap:
    """Three utterances of noise (0.6, 1.0 and 0.3 s) with 5, 9 and 3 random labels."""
    vocab = config.task.vocab_size
    assert config.data.tokenizer.vocab_size == vocab
    rng = np.random.default_rng(0)
    rate = config.data.sample_rate
    waveforms = [rng.normal(0, 0.1, int(rate * s)).astype(np.float32) for s in (0.6, 1.0, 0.3)]
    labels = [rng.integers(4, vocab, n).tolist() for n in (5, 9, 3)]
    return batch_from_waveforms(waveforms, labels, ["x"] * 3, ["a", "b", "c"], [0, 1, 2], rate)
