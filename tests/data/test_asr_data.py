"""ASR input: manifests, grapheme tokens, duration batching, resumable stream, bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.data.asr_data import ASRData
from seqlab.data.audio_manifest import ManifestError


def test_graphemes_batches_and_skipped_count(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    data = speech_data(manifest_dir)
    examples = data.examples("train")
    assert len(examples) == 12 and examples.num_skipped == 1
    assert data.tokenizer.decode(examples.label_ids[1]) == "i shall not want"
    lengths = examples.lengths()
    assert lengths[:5].tolist() == [20, 30, 40, 50, 60]
    batches = data.eval_batches(examples)
    assert sorted(i for b in batches for i in b) == list(range(12))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 120 or len(b) == 1
    batch = data.collate(examples, batches[0])
    assert batch.audio.shape[0] == len(batches[0])
    real = (1 - batch.audio_paddings).sum(dim=1).tolist()
    assert real == [examples.entries[i].num_samples for i in batches[0]]
    assert batch.tgt_ids.shape == batch.tgt_paddings.shape
    assert batch.ids == [f"u{i}" for i in batches[0]]


def test_stream_resumes_where_it_stopped(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    data = speech_data(manifest_dir)
    examples = data.examples("train")
    stream = data.train_stream(examples, seed=7)
    for _ in range(5):
        next(stream)
    state = stream.state_dict()
    expected = [next(stream) for _ in range(10)]
    resumed = data.train_stream(examples, seed=7)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(10)] == expected


def test_refuse_policy_names_the_line(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    data = speech_data(manifest_dir, bad_input="refuse")
    with pytest.raises(ManifestError, match=r"train\.jsonl:13: audio file not found"):
        data.examples("train")
    assert [p.name for p in (manifest_dir / "cache" / "shards").iterdir()] == ["fingerprints.json"]


def test_audio_removed_after_reading_names_the_manifest_line(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    data = speech_data(manifest_dir)
    examples = data.examples("train")
    (manifest_dir / "3.wav").unlink()
    with pytest.raises(ManifestError, match=r"train\.jsonl:4: audio file not found"):
        data.collate(examples, [2, 3])


def test_limits_and_max_duration(manifest_dir: Path, speech_data: Callable[..., ASRData]) -> None:
    data = speech_data(manifest_dir, max_duration_seconds=0.45, eval_limit=3)
    train = data.examples("train")
    assert [e.id for e in train.entries] == ["u0", "u1", "u2", "u5", "u6", "u7", "u10", "u11"]
    assert [e.id for e in data.examples("dev").entries] == ["u0", "u1", "u2"]


def test_dev2_is_a_dataset_where_the_corpus_has_it_or_a_path_names_it(tmp_path: Path) -> None:
    from seqlab.core.config import ConfigError
    from seqlab.data.data_paths import check_dataset

    corpus = tmp_path / "corpora" / "flite_bible"
    corpus.mkdir(parents=True)
    for split in ("train", "dev", "dev2", "test"):
        (corpus / f"{split}.jsonl").write_text("{}\n")
    data = ASRData(ASRData.Config(corpus="flite_bible", cache_dir=str(tmp_path)))
    paths = data.paths(prepare=False)
    assert paths["dev2"] == corpus / "dev2.jsonl"
    check_dataset(paths, "dev2")
    own = {f"{s}_path": str(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
    without = ASRData(ASRData.Config(corpus="", **own)).paths()
    with pytest.raises(ConfigError, match="--dataset dev2: no such dataset; datasets: train"):
        check_dataset(without, "dev2")
    mine = ASRData(ASRData.Config(corpus="", dev2_path=str(tmp_path / "x.jsonl"), **own))
    assert mine.paths()["dev2"] == tmp_path / "x.jsonl"
