"""A tiny speech run on its utterance index: exact resume mid-epoch, and a resume refused
when the manifest changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seqlab.core.registry import get_experiment
from seqlab.data.asr_data import IndexedUtterances
from seqlab.train.run_context import TRAINING_DATA_FILE, LogdirError
from seqlab.train.trainer import Trainer


def _tiny_asr_trainer(manifest_dir: Path, logdir: Path, *overrides: str) -> Trainer:
    """conformer_ctc_tiny on ``manifest_dir/train.jsonl`` (12 utterances, 3 to 5 a batch)."""
    manifest = manifest_dir / "train.jsonl"
    config = get_experiment("asr.flite_bible.conformer_ctc_tiny")
    config.apply_overrides(
        [
            "data.corpus=",
            f"data.cache_dir={manifest_dir / 'cache'}",
            *(f"data.{split}_path={manifest}" for split in ("train", "dev", "test")),
            "data.max_batch_seconds=1.5",
            "data.num_workers=1",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.log_every_steps=1",
            *overrides,
        ]
    )
    return Trainer(config, logdir, show_progress=False)


def test_a_crash_mid_epoch_resumes_exactly_from_the_index(
    manifest_dir: Path,
    train_until_crash: Callable[[Trainer, int], None],
    tmp_path: Path,
) -> None:
    """8 steps cross an epoch (about 4 batches); a crash after step 6 resumes from the
    checkpoint of step 4 to the same weights."""
    settings = ["trainer.max_steps=8", "trainer.checkpoint_every_steps=4"]
    whole = _tiny_asr_trainer(manifest_dir, tmp_path / "whole", *settings)
    assert isinstance(whole.examples, IndexedUtterances)
    whole.train()
    assert whole.stream.epoch >= 1
    crashed = _tiny_asr_trainer(manifest_dir, tmp_path / "crashed", *settings)
    train_until_crash(crashed, 6)
    resumed = _tiny_asr_trainer(manifest_dir, tmp_path / "crashed", *settings)
    assert resumed.train() == 8
    for name, tensor in whole.task.state_dict().items():
        assert torch.equal(resumed.task.state_dict()[name], tensor), name
    assert resumed.stream.state_dict() == whole.stream.state_dict()
    recorded = json.loads((tmp_path / "whole" / TRAINING_DATA_FILE).read_text())
    assert recorded["data"] == str(whole.examples.index.directory)

    manifest = manifest_dir / "train.jsonl"
    manifest.write_text("".join(manifest.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(LogdirError, match=r"train\.jsonl changed"):
        _tiny_asr_trainer(manifest_dir, tmp_path / "whole", "trainer.max_steps=9")


def test_augmented_training_resumes_bitwise_with_batches_made_ahead(
    manifest_dir: Path,
    train_until_crash: Callable[[Trainer, int], None],
    tmp_path: Path,
) -> None:
    """With speed, gain, noise and dither on, and batches collated ahead on a thread, a crash
    after step 6 resumed from step 4 reaches the weights of an uninterrupted run."""
    settings = [
        "trainer.max_steps=8",
        "trainer.checkpoint_every_steps=4",
        "trainer.prefetch_batches=2",
    ]
    augmented = [
        "data.augmentation.speeds=0.9,1.0,1.1",
        "data.augmentation.max_gain_db=6",
        "data.augmentation.noise_prob=0.5",
        "data.augmentation.dither=1e-4",
    ]
    whole = _tiny_asr_trainer(manifest_dir, tmp_path / "whole", *settings, *augmented)
    whole.train()
    assert whole.stream.epoch >= 1
    crashed = _tiny_asr_trainer(manifest_dir, tmp_path / "crashed", *settings, *augmented)
    train_until_crash(crashed, 6)
    resumed = _tiny_asr_trainer(manifest_dir, tmp_path / "crashed", *settings, *augmented)
    assert resumed.train() == 8
    for name, tensor in whole.task.state_dict().items():
        assert torch.equal(resumed.task.state_dict()[name], tensor), name
    # The stream the trainer collated from was the augmented one.
    raw = whole.data.collate(whole.data.examples("train"), [0, 1])
    assert whole.examples.augment is not None
    assert not torch.equal(whole.data.collate(whole.examples, [0, 1]).audio, raw.audio)
