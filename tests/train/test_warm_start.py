"""trainer.init_from_checkpoint: a new run starts from another run's weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import IncompatibleCheckpointError, list_checkpoints, load_checkpoint
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def test_qat_run_starts_from_trained_weights_and_another_shape_is_refused(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    source = tmp_path / "fp32"
    tiny_mt_trainer(source, "trainer.max_steps=3").train()
    trained = load_checkpoint(list_checkpoints(source / "checkpoints")[-1][1])["model"]

    qat = tmp_path / "qat"
    trainer = tiny_mt_trainer(
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
    trainer = tiny_mt_trainer(
        wider,
        "task.decoder.layer.ffn.hidden_dim=96",
        f"trainer.init_from_checkpoint={source}",
    )
    with pytest.raises(IncompatibleCheckpointError, match="has shape"):
        trainer.train()
    assert not list_checkpoints(wider / "checkpoints")


def test_a_source_with_another_tokenizer_is_refused(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    source = tmp_path / "fp32"
    tiny_mt_trainer(source, "trainer.max_steps=1").train()
    other = tmp_path / "other_vocab"
    trainer = tiny_mt_trainer(
        other,
        "data.tokenizer.vocab_size=900",
        "task.embedding.vocab_size=900",
        f"trainer.init_from_checkpoint={source}",
    )
    with pytest.raises(IncompatibleCheckpointError, match="another vocabulary"):
        trainer.train()
    assert not list_checkpoints(other / "checkpoints")
