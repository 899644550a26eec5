"""Streaming mode for parallel text: training pairs read from the files as training goes.

For corpora too large to tokenize into shards up front, or that a user does not want to copy.
Each epoch reads the training files in a seeded order, one window of ``window_pairs`` pairs at
a time (a window may run on into the next file); a window is tokenized, its pairs over
``max_length`` dropped, and it is cut into token-budget batches by length with a seeded
shuffle (:func:`seqlab.data.batching.plan_batches`), whose order is shuffled in turn. So the
window is the shuffle buffer and the bucketing window at once, and memory holds one window's
token ids (int32) whatever the size of the corpus.

The stream's position is (epoch, window number, where the window starts: file, byte offset
or Parquet row, line number; next batch in the window). A window is a pure function of its
start, so resuming reads the window again from its start, plans the same batches and goes on
at the saved batch: exact, with no buffer to save.

Every rank reads and tokenizes the same windows and takes its slice of each global batch,
like the shard-backed stream (seqlab.data.data_sharding).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.data.batching import plan_batches
from seqlab.data.sentencepiece_tokenizer import EOS_ID, SentencePieceTokenizer
from seqlab.data.shard_cache import flatten_ids
from seqlab.data.text_pairs import (
    DataFormatError,
    check_parquet_row,
    is_jsonl_file,
    is_parquet_file,
    iter_parquet_rows,
    parse_pair_line,
)
from seqlab.data.token_shards import EmptyTexts

PAIR_FILE_SUFFIXES = (".tsv", ".jsonl", ".json", ".parquet")
# Pairs parsed and tokenized together while a window is read: bounds the raw text in memory.
_READ_CHUNK = 10_000


def resolve_stream_files(spec: str) -> list[Path]:
    """The training files of ``spec``: a file, a directory (its .tsv, .jsonl and .parquet
    files) or a glob pattern, sorted by name.

    Raises:
      FileNotFoundError: naming ``spec`` when it matches no file.
    """
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.suffix in PAIR_FILE_SUFFIXES and p.is_file()]
    elif glob.has_magic(spec):
        files = [Path(p) for p in glob.glob(spec) if Path(p).is_file()]
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"no training files match {spec}")
    return sorted(files)


@dataclasses.dataclass(frozen=True)
class StreamPosition:
    """Where reading starts: the ``file``-th file of the epoch's order, at byte ``offset``
    (row for Parquet), whose line (row) number is ``number`` (from 1)."""

    file: int = 0
    offset: int = 0
    number: int = 1


def iter_pairs_from(
    path: Path, offset: int, number: int
) -> Iterator[tuple[tuple[str, str] | None, int]]:
    """(pair, or None for a blank line; the offset after it) from ``offset`` of ``path``.

    Raises:
      DataFormatError: naming ``path``'s line (row) of a malformed pair.
    """
    if is_parquet_file(path):
        for first, rows in iter_parquet_rows(path, _READ_CHUNK, start_row=offset):
            for row, (src, tgt) in enumerate(rows, start=first):
                yield check_parquet_row(src, tgt, row, path), row
        return
    is_jsonl = is_jsonl_file(path)
    with path.open("rb") as f:
        f.seek(offset)
        for line_no, raw in enumerate(f, start=number):
            offset += len(raw)
            yield parse_pair_line(raw, line_no, path, is_jsonl), offset


def read_window(
    files: list[Path], start: StreamPosition, max_pairs: int
) -> Iterator[tuple[list[tuple[str, str]], int, StreamPosition | None]]:
    """Reads up to ``max_pairs`` pairs from ``start`` on, through ``files`` in order, in
    chunks: (pairs, blank lines, the position after the chunk, None at the end of the last
    file)."""
    pairs: list[tuple[str, str]] = []
    blank, read = 0, 0
    position: StreamPosition | None = start
    while position is not None and read < max_pairs:
        path = files[position.file]
        offset, number = position.offset, position.number
        for pair, after in iter_pairs_from(path, offset, number):
            offset, number = after, number + 1
            if pair is None:
                blank += 1
                continue
            pairs.append(pair)
            read += 1
            if len(pairs) == _READ_CHUNK or read == max_pairs:
                break
        else:  # the file is done
            next_file = position.file + 1
            position = StreamPosition(next_file) if next_file < len(files) else None
            if pairs or blank or position is None:
                yield pairs, blank, position
                pairs, blank = [], 0
            continue
        position = StreamPosition(position.file, offset, number)
        yield pairs, blank, position
        pairs, blank = [], 0


def streaming_identity(fingerprints: list[dict[str, Any]], tokenizer_sha256: str) -> dict:
    """What identifies a stream's pairs: its files (path, size, mtime, content hash) and the
    tokenizer; ``data`` is a key of both."""
    digest = hashlib.sha256(
        "\n".join(["stream", tokenizer_sha256, *(f["sha256"] for f in fingerprints)]).encode()
    ).hexdigest()[:16]
    return {
        "data": f"stream-{digest}",
        "sources": fingerprints,
        "tokenizer_sha256": tokenizer_sha256,
    }


class _WindowIds:
    """One side's ids of the window's pairs, as lists (EOS appended if asked)."""

    def __init__(self, window: StreamedPairs, side: str, eos: bool) -> None:
        self.window, self.side, self.eos = window, side, eos

    def __len__(self) -> int:
        return len(self.window)

    def __getitem__(self, i: int) -> list[int]:
        flat, offsets = self.window.ids[self.side]
        ids = flat[offsets[i] : offsets[i + 1]].tolist()
        return ids + [EOS_ID] if self.eos else ids


class StreamedPairs:
    """The training pairs of the current window, as ``collate`` reads them (indices are
    positions in the window); :class:`PairStream` fills it.

    Pairs with a side of ``max_length`` tokens or more are dropped; ``reverse`` swaps sides.
    """

    def __init__(
        self,
        files: list[Path],
        tokenizer: SentencePieceTokenizer,
        reverse: bool,
        max_length: int,
        identity: dict[str, Any],
    ) -> None:
        self.files = files
        self._identity = identity
        self.tokenizer = tokenizer
        self.reverse = reverse
        self.max_length = max_length
        empty = (np.zeros(0, np.int32), np.zeros(1, np.int64))
        self.ids: dict[str, tuple[np.ndarray, np.ndarray]] = {"src": empty, "tgt": empty}
        self._lengths = np.zeros(0, np.int64)
        self.source_ids = _WindowIds(self, "src", eos=True)
        self.target_ids = _WindowIds(self, "tgt", eos=False)
        # The raw text of streamed pairs is not kept.
        self.source_text = self.target_text = EmptyTexts(0)
        # Over the windows this process has read (reported with the run's metrics).
        self.num_skipped = 0
        self.num_too_long = 0

    def __len__(self) -> int:
        return len(self._lengths)

    def lengths(self) -> np.ndarray:
        """[pairs in the window] max(source + EOS, target + 1) in tokens."""
        return self._lengths

    def identity(self) -> dict[str, Any]:
        """What identifies the pairs (:func:`streaming_identity`)."""
        return self._identity

    def fill(self, chunks: Iterator[tuple[list[tuple[str, str]], int, Any]]) -> None:
        """Makes the window the pairs of ``chunks`` (from :func:`read_window`), tokenized."""
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"src": [], "tgt": []}
        for pairs, blank, _ in chunks:
            self.num_skipped += blank
            if not pairs:
                continue
            sides = [list(side) for side in zip(*pairs, strict=True)]
            if self.reverse:
                sides.reverse()
            encoded = [flatten_ids(self.tokenizer.encode_batch(texts)) for texts in sides]
            keep = (encoded[0][1] < self.max_length) & (encoded[1][1] < self.max_length)
            self.num_too_long += int(len(keep) - keep.sum())
            for name, (flat, lengths) in zip(("src", "tgt"), encoded, strict=True):
                parts[name].append((flat[np.repeat(keep, lengths)], lengths[keep]))
        for name, side in parts.items():
            flat = np.concatenate([f for f, _ in side] or [np.zeros(0)]).astype(np.int32)
            lengths = np.concatenate([n for _, n in side] or [np.zeros(0, np.int64)])
            self.ids[name] = (flat, np.concatenate(([0], np.cumsum(lengths))))
        src_lengths = np.diff(self.ids["src"][1])
        tgt_lengths = np.diff(self.ids["tgt"][1])
        self._lengths = np.maximum(src_lengths + 1, tgt_lengths + 1)
        self.source_text = self.target_text = EmptyTexts(len(self._lengths))


class PairStream:
    """The endless, seeded, resumable batch stream of streaming mode (see the module doc).

    Batches are lists of positions in ``examples``' current window, which the stream fills;
    collate a batch before asking for the next.
    """

    def __init__(
        self, examples: StreamedPairs, window_pairs: int, max_tokens: int, seed: int
    ) -> None:
        if window_pairs < 1:
            raise ValueError(f"data.stream_window must be >= 1, got {window_pairs}")
        self.examples = examples
        self.window_pairs = window_pairs
        self.max_tokens = max_tokens
        self.seed = seed
        self.epoch = 0
        self.window = 0
        self.start = StreamPosition()
        self.index = 0
        self._plan: tuple[np.ndarray, np.ndarray] | None = None
        self._next_start: StreamPosition | None = None

    def file_order(self, epoch: int) -> list[Path]:
        """The files in the order epoch ``epoch`` reads them (a seeded permutation)."""
        files = self.examples.files
        order = np.random.default_rng([self.seed, epoch]).permutation(len(files))
        return [files[i] for i in order]

    def _load_window(self) -> tuple[np.ndarray, np.ndarray]:
        ends: list[StreamPosition | None] = []

        def chunks() -> Iterator[tuple[list[tuple[str, str]], int, Any]]:
            for chunk in read_window(self.file_order(self.epoch), self.start, self.window_pairs):
                ends.append(chunk[2])
                yield chunk

        self.examples.fill(chunks())
        self._next_start = ends[-1] if ends else None
        window_seed = int(
            np.random.SeedSequence([self.seed, self.epoch, self.window]).generate_state(1)[0]
        )
        return plan_batches(self.examples.lengths(), self.max_tokens, window_seed, epoch=0)

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        empty_epoch = self.start == StreamPosition() and self.window == 0
        while True:
            if self._plan is None:
                self._plan = self._load_window()
            order, bounds = self._plan
            if self.index < len(bounds):
                start, end = bounds[self.index]
                self.index += 1
                return order[start:end].tolist()
            empty_epoch = empty_epoch and len(bounds) == 0
            if self._next_start is None:  # the epoch is done
                if empty_epoch:
                    names = ", ".join(str(f) for f in self.examples.files)
                    raise DataFormatError(f"no training pairs under data.max_length in {names}")
                self.epoch, self.window, self.start = self.epoch + 1, 0, StreamPosition()
                empty_epoch = True
            else:
                self.window, self.start = self.window + 1, self._next_start
            self.index = 0
            self._plan = None

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "window": self.window,
            "file": self.start.file,
            "offset": self.start.offset,
            "line": self.start.number,
            "index": self.index,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "window" not in state:
            raise ValueError(
                "the checkpoint's data position is not a streaming one: resume with the "
                "data.streaming setting the run started with"
            )
        self.epoch = int(state["epoch"])
        self.window = int(state["window"])
        self.start = StreamPosition(int(state["file"]), int(state["offset"]), int(state["line"]))
        self.index = int(state["index"])
        self._plan = None
