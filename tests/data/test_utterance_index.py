"""The speech training index: the reader's entries and labels, a cache that does not decode
audio again, invalidation, and broken lines named by manifest:line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.data.asr_data import ASRData, IndexedUtterances
from seqlab.data.audio_manifest import ManifestError
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer

Reads = list[Path]


@pytest.fixture
def audio_reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    """The audio files the manifest reader decodes in this process (workers=1 builds here)."""
    from seqlab.data import audio_manifest

    reads: Reads = []
    original = audio_manifest.read_audio

    def counting(path: Path, *args: object, **kwargs: object) -> object:
        reads.append(path)
        return original(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audio_manifest, "read_audio", counting)
    return reads


def _train(data: ASRData) -> IndexedUtterances:
    examples = data.examples("train")
    assert isinstance(examples, IndexedUtterances)
    return examples


@pytest.mark.parametrize("workers", [1, 2])
def test_the_index_holds_what_the_reader_reads(
    manifest_dir: Path,
    speech_data: Callable[..., ASRData],
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    """Dev reads the same manifest into memory, as every split did before the index."""
    monkeypatch.setattr("seqlab.data.utterance_index._CHUNK_LINES", 5)  # three chunks
    data = speech_data(manifest_dir, num_workers=workers)
    train, in_memory = _train(data), data.examples("dev")
    assert len(train) == len(in_memory) == 12
    assert list(train.entries) == in_memory.entries
    assert list(train.label_ids) == in_memory.label_ids
    assert train.lengths().tolist() == in_memory.lengths().tolist()
    assert train.num_skipped == in_memory.num_skipped == 1
    assert train.index.problems == [
        f"{manifest_dir / 'train.jsonl'}:13: audio file not found: {manifest_dir / 'missing.wav'}"
    ]
    batch = data.collate(train, [3, 0])
    assert batch.ids == ["u3", "u0"]
    assert batch.tgt_text == ["in green", "the lord is my shepherd"]


def test_a_second_start_reads_no_audio_and_tokenizes_nothing(
    manifest_dir: Path,
    speech_data: Callable[..., ASRData],
    audio_reads: Reads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = _train(speech_data(manifest_dir, num_workers=1))
    assert len(audio_reads) == 13  # every line's audio decoded once (the last is missing)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the index was built again")

    monkeypatch.setattr("seqlab.data.utterance_index.build_utterance_index", no_build)
    audio_reads.clear()
    again = _train(speech_data(manifest_dir, num_workers=1))  # a new process would do this
    assert audio_reads == []
    assert again.index.directory == first.index.directory
    assert list(again.label_ids) == list(first.label_ids)


def test_a_changed_manifest_tokenizer_or_setting_makes_a_new_index(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    first = _train(speech_data(manifest_dir))
    manifest = manifest_dir / "train.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    row = json.loads(lines[0])
    manifest.write_text(
        "".join([json.dumps({**row, "text": "the lord is my light"}) + "\n"] + lines[1:])
    )
    data = speech_data(manifest_dir)
    edited = _train(data)
    assert edited.index.directory != first.index.directory
    assert edited.entries[0].text == "the lord is my light"
    assert data.tokenizer.decode(edited.label_ids[0]) == "the lord is my light"
    assert edited.identity()["sources"][0]["sha256"] != first.identity()["sources"][0]["sha256"]
    retokenized = _train(
        speech_data(
            manifest_dir, tokenizer=SentencePieceTokenizer.Config(model_type="char", vocab_size=24)
        )
    )
    assert retokenized.identity()["tokenizer_sha256"] != edited.identity()["tokenizer_sha256"]
    assert retokenized.index.directory != edited.index.directory
    unnormalized = _train(speech_data(manifest_dir, normalize_transcripts=False))
    assert unnormalized.index.directory not in (edited.index.directory, retokenized.index.directory)


def test_a_broken_line_in_a_later_chunk_is_named_and_leaves_nothing(
    manifest_dir: Path, speech_data: Callable[..., ASRData], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("seqlab.data.utterance_index._CHUNK_LINES", 4)
    manifest = manifest_dir / "train.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    row = json.loads(lines[9])
    lines[9] = json.dumps({**row, "audio": "gone.wav"}) + "\n"
    manifest.write_text("".join(lines[:12]))  # without the missing file of line 13
    data = speech_data(manifest_dir, bad_input="refuse", num_workers=2)
    with pytest.raises(ManifestError, match=rf"^{manifest}:10: audio file not found: .*gone\.wav"):
        data.examples("train")
    assert [p.name for p in (manifest_dir / "cache" / "shards").iterdir()] == ["fingerprints.json"]
    skipped = _train(speech_data(manifest_dir, num_workers=2))
    assert skipped.num_skipped == 1 and skipped.index.problems[0].startswith(f"{manifest}:10: ")
    assert [e.id for e in skipped.entries] == [f"u{i}" for i in range(12) if i != 9]


def test_a_manifest_edited_under_a_run_is_refused_not_misread(
    manifest_dir: Path, speech_data: Callable[..., ASRData]
) -> None:
    train = _train(speech_data(manifest_dir))
    manifest = manifest_dir / "train.jsonl"
    manifest.write_text(manifest.read_text()[40:])
    with pytest.raises(ManifestError, match=rf"^{manifest} changed since its index"):
        train.entries[0]
