"""Training in streaming mode: exact resume mid-epoch, and the recorded data identity."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seqlab.train.checkpoint import load_checkpoint
from seqlab.train.run_context import TRAINING_DATA_FILE, LogdirError
from seqlab.train.trainer import Trainer


@pytest.fixture
def two_files(
    tiny_mt_trainer: Callable[..., Trainer], bible_cache_dir: Path, tmp_path: Path
) -> Path:
    """A directory of two TSV files: 100 and 60 Bible pairs."""
    tiny_mt_trainer(tmp_path / "prepare", "trainer.max_steps=1")  # prepares the corpus
    bible = bible_cache_dir / "corpora" / "bible_en_es" / "train.tsv"
    lines = bible.read_text().splitlines(keepends=True)
    directory = tmp_path / "corpus"
    directory.mkdir()
    (directory / "part-1.tsv").write_text("".join(lines[:100]))
    (directory / "part-2.tsv").write_text("".join(lines[100:160]))
    return directory


def _streaming(directory: Path, *overrides: str) -> list[str]:
    return [
        f"data.train_path={directory}",
        "data.train_limit=0",
        "data.streaming=true",
        "data.stream_window=70",
        *overrides,
    ]


def test_a_crash_mid_epoch_resumes_exactly_in_streaming_mode(
    tiny_mt_trainer: Callable[..., Trainer],
    train_until_crash: Callable[[Trainer, int], None],
    two_files: Path,
    tmp_path: Path,
) -> None:
    """40 steps of 256-token batches cross windows, files and an epoch boundary; a crash
    after step 23 resumes from the checkpoint of step 20 to the same weights."""
    settings = _streaming(two_files, "trainer.max_steps=40", "trainer.checkpoint_every_steps=10")
    whole = tiny_mt_trainer(tmp_path / "whole", *settings)
    whole.train()
    assert whole.stream.epoch >= 1  # the run went past an epoch
    crashed = tiny_mt_trainer(tmp_path / "crashed", *settings)
    train_until_crash(crashed, 23)
    position = load_checkpoint(crashed.context.checkpoint_dir / "ckpt-00000020.pt")["data_stream"]
    assert set(position) == {"epoch", "window", "file", "offset", "line", "index"}
    resumed = tiny_mt_trainer(tmp_path / "crashed", *settings)
    assert resumed.train() == 40
    for name, tensor in whole.task.state_dict().items():
        assert torch.equal(resumed.task.state_dict()[name], tensor), name
    assert resumed.stream.state_dict() == whole.stream.state_dict()
    recorded = json.loads((tmp_path / "whole" / TRAINING_DATA_FILE).read_text())
    assert recorded["data"].startswith("stream-")
    assert [Path(s["path"]).name for s in recorded["sources"]] == ["part-1.tsv", "part-2.tsv"]


def test_switching_a_run_between_shards_and_streaming_is_refused(
    tiny_mt_trainer: Callable[..., Trainer], two_files: Path, tmp_path: Path
) -> None:
    file = two_files / "part-1.tsv"
    run = tmp_path / "run"
    small_vocabulary = "data.tokenizer.vocab_size=300"  # for 100 pairs
    sharded = tiny_mt_trainer(
        run,
        f"data.train_path={file}",
        "data.train_limit=0",
        "trainer.max_steps=2",
        small_vocabulary,
    )
    assert sharded.train() == 2
    with pytest.raises(LogdirError, match="shards instead of streaming|records training data"):
        tiny_mt_trainer(run, *_streaming(file, "trainer.max_steps=3", small_vocabulary))


def test_streaming_paths_are_checked_before_anything_runs(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    from seqlab.data.data_paths import DataPathError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataPathError, match=r"data.train_path=.*: no training files"):
        tiny_mt_trainer(tmp_path / "run", *_streaming(empty))
    (empty / "part.tsv").write_text("")
    with pytest.raises(DataPathError, match=r"part.tsv the file is empty"):
        tiny_mt_trainer(tmp_path / "run", *_streaming(empty))
