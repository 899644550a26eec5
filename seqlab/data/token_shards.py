"""Tokenized text on disk: built once, memory-mapped by every process that trains.

A shard set holds the records of one data file, each a tuple of texts named by its kind's
sides: ``("src", "tgt")`` for the pairs of MT, ``("text",)`` for the lines of a language model.
It is a directory ``<cache>/shards/<file stem>-<key>/`` holding, per side, a column of token
ids (seqlab.data.shard_cache):

- ``<side>.bin``: the token ids of every record, concatenated, as LEB128 varints
  (seqlab.data.varint: one byte for ids below 128, two below 16,384; about 1.4 bytes a
  token with SentencePiece's score-ordered ids, against uint16's 2);
- ``<side>_lengths.npy``: [N] tokens of each record, and ``<side>_sizes.npy``: [N] bytes of
  each record (uint16, or uint32 where a record is longer), from which the records' byte
  offsets are computed when the set is opened;

then the kind's per-record counts (``words.npy`` for lines: the whitespace-separated words of
each, for per-word perplexity), and ``manifest.json``: the format version, the kind, the
source file (path, size, mtime, sha256), the tokenizer's sha256, the record count and the
blank lines skipped.

The key hashes the format version, the source file's content hash, the tokenizer's and the
kind (pairs leave it out, keeping the keys they had before there were other kinds), so a
changed file or tokenizer makes a new shard set and an unchanged one is found again without
reading the text (seqlab.data.shard_cache, which the speech index shares). Reading maps the
files (``numpy.memmap``): only the lengths are resident, and every process of a job shares
the same pages of the OS cache.

Building streams the file in chunks of lines that worker processes parse and encode, so the
memory it takes does not grow with the corpus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.data.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
    train_or_load_sentencepiece_from_files,
)
from seqlab.data.shard_cache import (
    EncodedIds,
    IdsColumn,
    IdsColumnWriter,
    building,
    data_identity,
    encode_ids,
    find_or_build,
    load_manifest,
    load_worker_tokenizer,
    map_in_order,
    save_array,
    worker_tokenizer,
    write_manifest,
)
from seqlab.data.text_lines import TEXT_FIELD, check_parquet_text, count_words, parse_text_line
from seqlab.data.text_pairs import (
    PARQUET_COLUMNS,
    check_data_file,
    check_parquet_row,
    is_jsonl_file,
    is_parquet_file,
    iter_parquet_rows,
    parse_pair_line,
)

FORMAT_VERSION = 2
_CHUNK_LINES = 20_000


# ---- kinds of records -------------------------------------------------------------------------
Texts = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RecordKind:
    """What the records of a data file are: their texts (sides), how a raw line or a Parquet
    row becomes them, and the per-record counts a shard set keeps beside the ids."""

    name: str
    sides: tuple[str, ...]
    """The texts of a record; also its JSONL keys and Parquet columns."""
    parse_line: Callable[[bytes, int, Path, bool], Texts | None]
    """(raw line, line number, file, is JSONL) -> texts, or None for a blank line."""
    parse_row: Callable[[tuple[Any, ...], int, Path], Texts | None]
    """(Parquet values of ``sides``, row number, file) -> texts, or None for a blank row."""
    counts: tuple[tuple[str, Callable[[Texts], int]], ...] = ()
    """(name, count of a record's texts): arrays ``<name>.npy`` of the shard set."""


def _pair_row(row: tuple[Any, ...], number: int, path: Path) -> Texts:
    return check_parquet_row(row[0], row[1], number, path)


def _text_line(raw: bytes, number: int, path: Path, is_jsonl: bool) -> Texts | None:
    text = parse_text_line(raw, number, path, is_jsonl)
    return None if text is None else (text,)


def _text_row(row: tuple[Any, ...], number: int, path: Path) -> Texts | None:
    text = check_parquet_text(row[0], number, path)
    return None if text is None else (text,)


def _words(texts: Texts) -> int:
    return count_words(texts[0])


PAIRS = RecordKind("pairs", PARQUET_COLUMNS, parse_pair_line, _pair_row)
"""Parallel text for MT: TSV (source TAB target), JSONL or Parquet with ``src`` and ``tgt``."""
LINES = RecordKind("lines", TEXT_FIELD, _text_line, _text_row, counts=(("words", _words),))
"""Text for language models: plain text (a line each), JSONL or Parquet with ``text``."""
KINDS = {kind.name: kind for kind in (PAIRS, LINES)}


# ---- reading records --------------------------------------------------------------------------
def iter_line_chunks(
    path: Path, lines_per_chunk: int = _CHUNK_LINES
) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the chunk's first line, its raw lines) over the file, in order."""
    with path.open("rb") as f:
        first, lines = 1, []
        for raw in f:
            lines.append(raw)
            if len(lines) == lines_per_chunk:
                yield first, lines
                first, lines = first + len(lines), []
        if lines:
            yield first, lines


def iter_chunks(path: Path, kind: RecordKind) -> Iterator[tuple[int, list[Any]]]:
    """Chunks of a data file: raw lines (text, TSV, JSONL) or rows of the kind's columns
    (Parquet), each with the number of its first line or row."""
    if is_parquet_file(path):
        return iter_parquet_rows(path, _CHUNK_LINES, columns=kind.sides)
    return iter_line_chunks(path)


def parse_record(
    kind: RecordKind, item: Any, number: int, path: Path, is_jsonl: bool
) -> Texts | None:
    """The texts of one chunk item (a raw line, or a Parquet row), None for a blank one."""
    if isinstance(item, bytes):
        return kind.parse_line(item, number, path, is_jsonl)
    return kind.parse_row(item, number, path)


def iter_records(path: Path, kind: RecordKind, limit: int = 0) -> Iterator[Texts]:
    """The records of a data file, streamed; the first ``limit`` (0 = all)."""
    path = check_data_file(path)
    is_jsonl = is_jsonl_file(path)
    count = 0
    for first, items in iter_chunks(path, kind):
        for offset, item in enumerate(items):
            record = parse_record(kind, item, first + offset, path, is_jsonl)
            if record is None:
                continue
            yield record
            count += 1
            if count == limit:
                return


def iter_pairs(path: Path, limit: int = 0) -> Iterator[tuple[str, str]]:
    """The (source, target) pairs of a TSV, JSONL or Parquet file, streamed; the first
    ``limit`` (0 = all)."""
    return iter_records(path, PAIRS, limit)  # type: ignore[return-value]


def write_sample(
    paths: Path | Sequence[Path],
    kind: RecordKind,
    limit: int,
    max_records: int,
    seed: int,
    outs: Sequence[Path],
) -> int:
    """Writes each side of the first ``limit`` records (0 = all) of the files (one after the
    other) to its own text file of ``outs``, one text a line: every record, or a seeded sample
    of ``max_records`` of them in file order. Two passes over the files; memory holds one flag
    per record.

    Returns:
      The number of records written.
    """
    files = [paths] if isinstance(paths, Path) else list(paths)

    def iter_all() -> Iterator[Texts]:
        records = itertools.chain.from_iterable(iter_records(path, kind) for path in files)
        return itertools.islice(records, limit or None)

    total = sum(1 for _ in iter_all())
    keep = None
    if total > max_records:
        keep = np.zeros(total, dtype=bool)
        keep[np.random.default_rng(seed).choice(total, size=max_records, replace=False)] = True
    written = 0
    with contextlib.ExitStack() as stack:
        sinks = [stack.enter_context(out.open("w")) for out in outs]
        for index, texts in enumerate(iter_all()):
            if keep is None or keep[index]:
                for sink, text in zip(sinks, texts, strict=True):
                    sink.write(text + "\n")
                written += 1
    return written


def train_tokenizer_on_sample(
    config: SentencePieceTokenizer.Config,
    files: Sequence[Path],
    fingerprints: Sequence[dict[str, Any]],
    kind: RecordKind,
    limit: int,
    cache_dir: Path,
) -> tuple[SentencePieceTokenizer, Path]:
    """The tokenizer of the first ``limit`` records (0 = all) of ``files``, cached under their
    content hashes (``fingerprints``): trained, if it is not cached, by SentencePiece's own
    file reader on a seeded sample of ``config.max_training_sentences`` texts in all (the
    texts of every side, side after side), never on a list of the corpus."""
    shas = ":".join(f["sha256"] for f in fingerprints)

    def write_texts(directory: Path) -> list[Path]:
        outs = [directory / f"{side}.txt" for side in kind.sides]
        max_records = max(1, config.max_training_sentences // len(kind.sides))
        write_sample(files, kind, limit, max_records, 0, outs)
        return outs

    return train_or_load_sentencepiece_from_files(
        config, f"{kind.name}:{shas}:{limit}", write_texts, cache_dir
    )


# ---- encoding in worker processes -------------------------------------------------------------
def _encode_chunk(
    task: tuple[str, str, int, list[Any]],
) -> tuple[list[EncodedIds], list[np.ndarray], int]:
    """Parses and encodes one chunk of a ``(kind name, path, first line number, items)``.

    Returns:
      (per side: its encoded ids; per count of the kind: its value for each record; blank
      lines).
    """
    kind_name, path_text, first_line, items = task
    kind, path = KINDS[kind_name], Path(path_text)
    is_jsonl = is_jsonl_file(path)
    records = [
        parse_record(kind, item, first_line + i, path, is_jsonl) for i, item in enumerate(items)
    ]
    records = [r for r in records if r is not None]
    processor = worker_tokenizer()
    encoded = [
        encode_ids(processor.encode([r[side] for r in records])) for side in range(len(kind.sides))
    ]
    counts = [
        np.fromiter(map(count, records), dtype=np.int64, count=len(records))
        for _, count in kind.counts
    ]
    return encoded, counts, len(items) - len(records)


def build_token_shards(
    source: Path,
    kind: RecordKind,
    tokenizer_path: Path,
    out_dir: Path,
    manifest: dict[str, Any],
    workers: int,
) -> None:
    """Encodes every record of ``source`` into a new shard set at ``out_dir``.

    Raises:
      DataFormatError: naming the file and line of a malformed line (nothing is left behind).
    """
    counts: dict[str, list[np.ndarray]] = {name: [] for name, _ in kind.counts}
    blank = 0
    with building(out_dir) as tmp:
        columns = [IdsColumnWriter(tmp, side) for side in kind.sides]
        try:
            tasks = (
                (kind.name, str(source), first, items) for first, items in iter_chunks(source, kind)
            )
            for encoded, chunk_counts, skipped in map_in_order(
                _encode_chunk, tasks, workers, load_worker_tokenizer, (str(tokenizer_path),)
            ):
                for column, ids in zip(columns, encoded, strict=True):
                    column.append(ids)
                for parts, values in zip(counts.values(), chunk_counts, strict=True):
                    parts.append(values)
                blank += skipped
        finally:
            num_records = [column.close() for column in columns]
        for name, parts in counts.items():
            save_array(tmp / f"{name}.npy", parts)
        manifest = {
            **manifest,
            "kind": kind.name,
            "encoding": "leb128",
            f"num_{kind.name}": num_records[0],
            "blank_lines": blank,
        }
        write_manifest(tmp, manifest)


class TokenShards:
    """A shard set, memory-mapped: the ids of record i on each side, the per-record lengths
    in memory, and the kind's per-record counts (mapped)."""

    def __init__(self, directory: Path, kind: RecordKind) -> None:
        self.directory = directory
        self.kind = kind
        self.manifest = load_manifest(directory)
        self._columns = {side: IdsColumn(directory, side) for side in kind.sides}
        self.lengths: dict[str, np.ndarray] = {
            side: column.lengths for side, column in self._columns.items()
        }
        """Per side: [N] int32 tokens of each record."""
        self.counts: dict[str, np.ndarray] = {
            name: np.load(directory / f"{name}.npy", mmap_mode="r") for name, _ in kind.counts
        }
        """Per count of the kind: [N] its value for each record."""

    def __len__(self) -> int:
        return len(self.lengths[self.kind.sides[0]])

    @property
    def key(self) -> str:
        return self.directory.name

    def ids(self, side: str, index: int) -> np.ndarray:
        """The token ids of record ``index``'s ``side`` (e.g. src, tgt, text), without BOS or
        EOS: [length] int64."""
        return self._columns[side].ids(index)

    def identity(self) -> dict[str, Any]:
        """What identifies the training data read from this set (the logdir records it): the
        set, its source file and its tokenizer."""
        return data_identity(self.directory, self.manifest)


class EmptyTexts:
    """The raw texts of shard-backed records, which are not kept: ``size`` empty strings."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> str:
        if not -self.size <= i < self.size:
            raise IndexError(i)
        return ""


def open_token_shards(
    source: Path, kind: RecordKind, tokenizer_path: Path, cache_dir: Path, workers: int = 0
) -> TokenShards:
    """The shard set of ``source``'s records of ``kind`` encoded with ``tokenizer_path``:
    found by its manifest's key, or built (by ``workers`` processes; 0 = one per core)."""
    source = check_data_file(source)

    def build(directory: Path, manifest: dict[str, Any]) -> None:
        build_token_shards(
            source, kind, tokenizer_path, directory, manifest, workers or os.cpu_count() or 1
        )

    # Pairs keep the keys they had before there were other kinds: shards on disk are found.
    settings = None if kind is PAIRS else {"kind": kind.name}
    directory = find_or_build(source, tokenizer_path, cache_dir, FORMAT_VERSION, build, settings)
    return TokenShards(directory, kind)


def open_pair_shards(
    source: Path, tokenizer_path: Path, cache_dir: Path, workers: int = 0
) -> TokenShards:
    """The shard set of ``source``'s pairs (see ``open_token_shards``)."""
    return open_token_shards(source, PAIRS, tokenizer_path, cache_dir, workers)
