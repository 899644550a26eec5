"""trainer.init_from_checkpoint: a new run starts from another run's weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import IncompatibleCheckpointError, list_checkpoints, load_checkpoint
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def tiny_trainer(cache_dir: Path, logdir: Path, *overrides: str) -> Trainer:
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


def test_qat_run_starts_from_trained_weights_and_another_shape_is_refused(
    bible_cache_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "fp32"
    tiny_trainer(bible_cache_dir, source, "trainer.max_steps=3").train()
    trained = load_checkpoint(list_checkpoints(source / "checkpoints")[-1][1])["model"]

    qat = tmp_path / "qat"
    trainer = tiny_trainer(
        bible_cache_dir,
        qat,
        "trainer.max_steps=1",
        "quant.mode=qat",
        "seed=7",  # another initialization than the source run's
        f"trainer.init_from_checkpoint={source}",
    )
    fresh = {n: t.clone() for n, t in trainer.task.state_dict().items()}
    assert trainer.train() == 1  # a fresh step count
    tuned = load_checkpoint(list_checkpoints(qat / "checkpoints")[-1][1])["model"]
    assert set(tuned) > set(trained)  # plus the fake-quantized layers' range buffers
    embedding = "embedding.weight"
    assert embedding in trained
    # One small step away from the trained weights, far from a fresh initialization.
    moved = (tuned[embedding] - trained[embedding]).abs().max()
    assert moved < 0.1 * (fresh[embedding] - trained[embedding]).abs().max()

    wider = tmp_path / "wider"
    trainer = tiny_trainer(
        bible_cache_dir,
        wider,
        "task.decoder.layer.ffn.hidden_dim=96",
        f"trainer.init_from_checkpoint={source}",
    )
    with pytest.raises(IncompatibleCheckpointError, match="has shape"):
        trainer.train()
    assert not list_checkpoints(wider / "checkpoints")


def test_a_source_with_another_tokenizer_is_refused(bible_cache_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "fp32"
    tiny_trainer(bible_cache_dir, source, "trainer.max_steps=1").train()
    other = tmp_path / "other_vocab"
    trainer = tiny_trainer(
        bible_cache_dir,
        other,
        "data.tokenizer.vocab_size=900",
        "task.embedding.vocab_size=900",
        f"trainer.init_from_checkpoint={source}",
    )
    with pytest.raises(IncompatibleCheckpointError, match="another vocabulary"):
        trainer.train()
    assert not list_checkpoints(other / "checkpoints")
