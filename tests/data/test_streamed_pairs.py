"""Tests for streaming mode: windows read from file positions, the seeded resumable stream."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from seqlab.data.data_sharding import shard_indices
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer, train_or_load_sentencepiece
from seqlab.data.streamed_pairs import (
    PairStream,
    StreamedPairs,
    StreamPosition,
    read_window,
    resolve_stream_files,
    streaming_identity,
)
from seqlab.data.text_pairs import DataFormatError

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def _pair(i: int) -> tuple[str, str]:
    """Pair i: its number spelled in words on both sides, lengths varying with i."""
    words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(1 + i % 9)]
    return f"s{i} " + " ".join(words), f"t{i} " + " ".join(reversed(words))


def _write_tsv(path: Path, numbers: range, blank_every: int = 0) -> Path:
    lines = []
    for i in numbers:
        if blank_every and i % blank_every == 0:
            lines.append("\n")
        src, tgt = _pair(i)
        lines.append(f"{src}\t{tgt}\n")
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> SentencePieceTokenizer:
    texts = [t for i in range(400) for t in _pair(i)]
    config = SentencePieceTokenizer.Config(vocab_size=60)
    return train_or_load_sentencepiece(config, texts, tmp_path_factory.mktemp("spm"))[0]


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """Three files of 70, 45 and 85 pairs (200 in all), with blank lines, one JSONL."""
    first = _write_tsv(tmp_path / "a.tsv", range(0, 70), blank_every=13)
    second = tmp_path / "b.jsonl"
    second.write_text(
        "".join(
            json.dumps(dict(zip(("src", "tgt"), _pair(i), strict=True))) + "\n"
            for i in range(70, 115)
        )
    )
    third = _write_tsv(tmp_path / "c.tsv", range(115, 200))
    return [first, second, third]


def _stream(files: list[Path], tokenizer: SentencePieceTokenizer, window: int) -> PairStream:
    examples = StreamedPairs(files, tokenizer, reverse=False, max_length=200, identity={})
    return PairStream(examples, window_pairs=window, max_tokens=64, seed=3)


def _batch_sources(stream: PairStream, batch: list[int]) -> list[str]:
    """The first source token of each pair of ``batch`` ("s17"), read back from its ids."""
    tok = stream.examples.tokenizer
    return [tok.decode(stream.examples.source_ids[i]).split()[0] for i in batch]


def _epochs(stream: PairStream, count: int) -> list[list[list[str]]]:
    """The batches (as pair names) of the stream's next ``count`` epochs."""
    out: list[list[list[str]]] = [[] for _ in range(count)]
    first = stream.epoch
    while True:
        batch = next(stream)
        if stream.epoch - first == count:
            return out
        out[stream.epoch - first].append(_batch_sources(stream, batch))


def _read_windows(files: list[Path], size: int) -> list[list[str]]:
    """The pair names of each window read from the start to the end of ``files``."""
    start: StreamPosition | None = StreamPosition()
    windows = []
    while start is not None:
        names, ends = [], []
        for pairs, _, end in read_window(files, start, size):
            names += [src.split()[0] for src, _ in pairs]
            ends.append(end)
        windows.append(names)
        start = ends[-1]
    return windows


def test_windows_read_every_pair_once_in_file_order_across_files(files: list[Path]) -> None:
    windows = _read_windows(files, 30)
    assert [name for window in windows for name in window] == [f"s{i}" for i in range(200)]
    assert [len(window) for window in windows] == [30] * 6 + [20]


def test_each_epoch_trains_on_every_pair_exactly_once_in_a_seeded_new_order(
    files: list[Path], tokenizer: SentencePieceTokenizer
) -> None:
    stream = _stream(files, tokenizer, window=40)
    first, second = _epochs(stream, 2)
    for epoch in (first, second):
        names = [name for batch in epoch for name in batch]
        assert sorted(names) == sorted(f"s{i}" for i in range(200))
    assert first != second
    assert _epochs(_stream(files, tokenizer, window=40), 1)[0] == first
    # Blank lines are skipped and counted (6 an epoch; two epochs read and a third begun).
    assert 2 * 6 <= stream.examples.num_skipped <= 3 * 6
    assert len(stream.examples) <= 40


def test_batches_are_bucketed_by_length_within_a_window(
    files: list[Path], tokenizer: SentencePieceTokenizer
) -> None:
    stream = _stream(files, tokenizer, window=200)
    batch = next(stream)
    lengths = stream.examples.lengths()[batch]
    assert len(batch) * lengths.max() <= 64 or len(batch) == 1
    assert lengths.max() - lengths.min() <= 2


@pytest.mark.parametrize("stop_after", [1, 5, 9, 23])
def test_resuming_from_a_saved_position_continues_exactly(
    files: list[Path], tokenizer: SentencePieceTokenizer, stop_after: int
) -> None:
    whole = _stream(files, tokenizer, window=40)
    batches = [_batch_sources(whole, next(whole)) for _ in range(60)]
    crashed = _stream(files, tokenizer, window=40)
    for _ in range(stop_after):
        next(crashed)
    state = json.loads(json.dumps(crashed.state_dict()))  # as a checkpoint keeps it
    resumed = _stream(files, tokenizer, window=40)
    resumed.load_state_dict(state)
    rest = [_batch_sources(resumed, next(resumed)) for _ in range(60 - stop_after)]
    assert rest == batches[stop_after:]


def test_rank_slices_of_streamed_batches_cover_each_pair_once(
    files: list[Path], tokenizer: SentencePieceTokenizer
) -> None:
    stream = _stream(files, tokenizer, window=50)
    per_rank: list[list[str]] = [[], [], []]
    for batch in itertools.islice(stream, 1000):
        if stream.epoch > 0:
            break
        for rank in range(3):
            per_rank[rank] += _batch_sources(stream, shard_indices(batch, rank, 3))
    everything = [name for names in per_rank for name in names]
    assert sorted(everything) == sorted(f"s{i}" for i in range(200))


def test_parquet_files_stream_and_resume_by_row(
    tmp_path: Path, tokenizer: SentencePieceTokenizer
) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pairs = [_pair(i) for i in range(90)]
    table = pyarrow.table({"src": [s for s, _ in pairs], "tgt": [t for _, t in pairs]})
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path, row_group_size=25)
    windows = _read_windows([path], 20)
    assert [name for window in windows for name in window] == [f"s{i}" for i in range(90)]
    whole = _stream([path], tokenizer, window=20)
    batches = [_batch_sources(whole, next(whole)) for _ in range(30)]
    resumed = _stream([path], tokenizer, window=20)
    for _ in range(11):
        next(resumed)
    state = resumed.state_dict()
    again = _stream([path], tokenizer, window=20)
    again.load_state_dict(state)
    assert [_batch_sources(again, next(again)) for _ in range(19)] == batches[11:]


def test_a_malformed_line_deep_in_a_file_is_named_by_its_line_number(
    tmp_path: Path, tokenizer: SentencePieceTokenizer
) -> None:
    path = _write_tsv(tmp_path / "big.tsv", range(0, 500))
    lines = path.read_text().splitlines(keepends=True)
    lines[436] = "no tab on this line\n"
    path.write_text("".join(lines))
    stream = _stream([path], tokenizer, window=100)
    with pytest.raises(DataFormatError, match=rf"{path}:437: expected 2 tab-separated fields"):
        for _ in range(10_000):
            next(stream)
    # Also when the window that holds it is read after a resume (from a byte offset).
    state = _stream([path], tokenizer, window=100)
    for _ in range(3):
        next(state)
    resumed = _stream([path], tokenizer, window=100)
    resumed.load_state_dict(state.state_dict())
    with pytest.raises(DataFormatError, match=rf"{path}:437:"):
        for _ in range(10_000):
            next(resumed)


def test_files_resolve_from_a_directory_or_a_pattern(files: list[Path], tmp_path: Path) -> None:
    assert resolve_stream_files(str(tmp_path)) == sorted(files)
    assert resolve_stream_files(str(tmp_path / "*.tsv")) == [files[0], files[2]]
    with pytest.raises(FileNotFoundError, match="no training files match"):
        resolve_stream_files(str(tmp_path / "*.csv"))


def test_a_corpus_with_no_pair_short_enough_is_refused(
    files: list[Path], tokenizer: SentencePieceTokenizer
) -> None:
    examples = StreamedPairs(files, tokenizer, reverse=False, max_length=2, identity={})
    with pytest.raises(DataFormatError, match="no training pairs under data.max_length"):
        next(PairStream(examples, window_pairs=40, max_tokens=64, seed=0))


def test_the_identity_changes_with_a_file_or_the_tokenizer() -> None:
    a = {"path": "/a.tsv", "size": 1, "mtime_ns": 1, "sha256": "00"}
    b = {**a, "sha256": "11"}
    assert streaming_identity([a], "t")["data"] != streaming_identity([b], "t")["data"]
    assert streaming_identity([a], "t")["data"] != streaming_identity([a], "u")["data"]
    assert streaming_identity([a], "t") == streaming_identity([a], "t")
