"""Tiny language models train through the standard runners on a slice of the English Bible:
dev perplexity falls, decoding samples continuations, `seqlab infer --prompt` works, and a
crash mid-epoch resumes exactly from the shards of the training text."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seqlab.cli import main
from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.data.lm_data import ShardedLines
from seqlab.train.checkpoint import load_checkpoint
from seqlab.train.decode_runner import decode_dataset
from seqlab.train.evaler import evaluate
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


@pytest.mark.parametrize("name", ["lm.bible_en.transformer_tiny", "lm.bible_en.lstm_tiny"])
def test_tiny_lm_trains_and_dev_perplexity_falls(
    name: str, bible_cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = get_experiment(name)
    config.apply_overrides(
        [
            f"data.cache_dir={bible_cache_dir}",
            "data.train_limit=2000",
            "data.eval_limit=30",
            "trainer.max_steps=60",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.checkpoint_every_steps=0",
        ]
    )
    trainer = Trainer(config, tmp_path, show_progress=False)
    before = evaluate(trainer.context, "dev", show_progress=False)
    trainer.train()
    after = evaluate(trainer.context, "dev", show_progress=False)
    vocab = config.task.embedding.vocab_size
    assert before["pplx"] > 0.5 * vocab  # untrained: close to uniform
    assert after["pplx"] < 0.5 * before["pplx"]
    assert after["pplx_per_word"] > after["pplx"]  # more than one token per word on average

    results, metrics = decode_dataset(trainer.context, "dev", limit=4, show_progress=False)
    assert [r["prompt"] for r in results] == [
        " ".join(line.split()[:5]) for line in trainer.data.examples("dev").texts[:4]
    ]
    assert any(r["hypothesis"] for r in results)
    assert metrics["num_sentences"] == 4

    capsys.readouterr()
    assert main(["infer", "--logdir", str(tmp_path), "--prompt", "And God said"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and out.strip()
    assert json.loads((tmp_path / "config.json").read_text())["name"] == name


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_crash_mid_epoch_resumes_exactly_from_the_shards(
    bible_cache_dir: Path,
    train_until_crash: Callable[[Trainer, int], None],
    tmp_path: Path,
    prefetch: int,
) -> None:
    """The training lines are read from their shard set; the checkpoint holds the stream
    position of the last batch trained on, and resuming from it ends where a run without
    the crash ends, bit for bit."""

    def tiny_lm_trainer(logdir: Path) -> Trainer:
        config = get_experiment("lm.bible_en.transformer_tiny")
        config.apply_overrides(
            [
                f"data.cache_dir={bible_cache_dir}",
                "data.train_limit=400",
                "trainer.max_steps=9",
                "trainer.checkpoint_every_steps=4",
                "trainer.eval_every_steps=0",
                "trainer.decode_every_steps=0",
                f"trainer.prefetch_batches={prefetch}",
            ]
        )
        return Trainer(config, logdir, show_progress=False)

    whole = tiny_lm_trainer(tmp_path / "whole")
    assert isinstance(whole.examples, ShardedLines)  # memory-mapped training lines
    assert whole.stream.batches_in_epoch() > 9  # the crash and the end are mid-epoch
    whole.train()
    crashed = tiny_lm_trainer(tmp_path / "crashed")
    train_until_crash(crashed, 6)
    checkpoint = load_checkpoint(crashed.context.checkpoint_dir / "ckpt-00000004.pt")
    assert checkpoint["data_stream"] == {"epoch": 0, "index": 4}
    resumed = tiny_lm_trainer(tmp_path / "crashed")
    assert resumed.train() == 9
    for name, tensor in whole.task.state_dict().items():
        assert torch.equal(resumed.task.state_dict()[name], tensor), name
    assert resumed.stream.state_dict() == whole.stream.state_dict()
