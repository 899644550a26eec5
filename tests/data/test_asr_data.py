"""ASR input: manifests, grapheme tokens, duration batching, resumable stream, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from seqlab.data.asr_data import ASRData
from seqlab.data.audio_manifest import ManifestError

TEXTS = ["the lord is my shepherd", "I shall not want.", "he maketh me to lie down", "in green"]


@pytest.fixture()
def manifest_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(TEXTS * 3):
        seconds = 0.2 + 0.1 * (i % 5)
        soundfile.write(str(tmp_path / f"{i}.wav"), rng.normal(0, 0.1, int(16000 * seconds)), 16000)
        rows.append({"id": f"u{i}", "audio": f"{i}.wav", "text": text})
    rows.append({"id": "bad", "audio": "missing.wav", "text": "x"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _data(directory: Path, **overrides: object) -> ASRData:
    manifest = str(directory / "train.jsonl")
    config = ASRData.Config(
        corpus="",
        cache_dir=str(directory / "cache"),
        train_path=manifest,
        dev_path=manifest,
        test_path=manifest,
        max_batch_seconds=1.2,
        eval_max_batch_seconds=1.2,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    data = config.build()
    data.load_tokenizer()
    return data


def test_graphemes_batches_and_skipped_count(manifest_dir: Path) -> None:
    data = _data(manifest_dir)
    examples = data.examples("train")
    assert len(examples) == 12 and examples.num_skipped == 1
    assert data.tokenizer.decode(examples.label_ids[1]) == "i shall not want"
    lengths = examples.lengths()
    assert lengths[:5] == [20, 30, 40, 50, 60]
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


def test_stream_resumes_where_it_stopped(manifest_dir: Path) -> None:
    data = _data(manifest_dir)
    examples = data.examples("train")
    stream = data.train_stream(examples, seed=7)
    for _ in range(5):
        next(stream)
    state = stream.state_dict()
    expected = [next(stream) for _ in range(10)]
    resumed = data.train_stream(examples, seed=7)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(10)] == expected


def test_refuse_policy_names_the_line(manifest_dir: Path) -> None:
    with pytest.raises(ManifestError, match=r"train\.jsonl:13: audio file not found"):
        _data(manifest_dir, bad_input="refuse")


def test_audio_removed_after_reading_names_the_manifest_line(manifest_dir: Path) -> None:
    data = _data(manifest_dir)
    examples = data.examples("train")
    (manifest_dir / "3.wav").unlink()
    with pytest.raises(ManifestError, match=r"train\.jsonl:4: audio file not found"):
        data.collate(examples, [2, 3])


def test_limits_and_max_duration(manifest_dir: Path) -> None:
    data = _data(manifest_dir, max_duration_seconds=0.45, eval_limit=3)
    train = data.examples("train")
    assert [e.id for e in train.entries] == ["u0", "u1", "u2", "u5", "u6", "u7", "u10", "u11"]
    assert [e.id for e in data.examples("dev").entries] == ["u0", "u1", "u2"]
