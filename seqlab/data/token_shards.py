"""Tokenized text on disk: built once, memory-mapped by every process that trains.

A shard set holds the records of one data file, each a tuple of texts named by its kind's
sides: ``("src", "tgt")`` for the pairs of MT, ``("text",)`` for the lines of a language model.
It is a directory ``<cache>/shards/<file stem>-<key>/`` holding, per side,

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

The key hashes the format version, the kind, the source file's content hash and the
tokenizer's, so a changed file or tokenizer makes a new shard set and an unchanged one is
found again without reading the text: the content hash is computed once per (path, size,
mtime) and remembered in ``<cache>/shards/fingerprints.json``. Shards are written under a
temporary name and renamed when whole. Reading maps the files (``numpy.memmap``): only the
lengths are resident, and every process of a job shares the same pages of the OS cache.

Building streams the file in chunks of lines that worker processes parse and encode, so the
memory it takes does not grow with the corpus.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from seqlab.core.atomic_files import write_atomic
from seqlab.core.file_hash import sha256_of
from seqlab.data.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
    train_or_load_sentencepiece_from_files,
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
from seqlab.data.varint import decode_varints, encode_varints, varint_sizes

FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
FINGERPRINTS_FILE = "fingerprints.json"
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


# ---- source fingerprints ----------------------------------------------------------------------
def file_fingerprint(path: Path, cache_dir: Path) -> dict[str, Any]:
    """{path, size, mtime_ns, sha256} of ``path``; the hash is read from the cache when the
    size and modification time are those it was computed for."""
    path = path.resolve()
    stat = path.stat()
    record = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    store = cache_dir / FINGERPRINTS_FILE
    known: dict[str, Any] = {}
    if store.is_file():
        try:
            known = json.loads(store.read_text())
        except ValueError:
            known = {}  # a damaged cache only costs a re-hash
    cached = known.get(str(path))
    if (
        cached
        and cached.get("size") == record["size"]
        and cached.get("mtime_ns") == stat.st_mtime_ns
    ):
        return {**record, "sha256": cached["sha256"]}
    record["sha256"] = sha256_of(path)
    known[str(path)] = record
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(store, (json.dumps(known, indent=1) + "\n").encode())
    return record


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
_PROCESSOR: spm.SentencePieceProcessor | None = None


def _load_processor(model_path: str) -> None:
    global _PROCESSOR
    _PROCESSOR = spm.SentencePieceProcessor(model_file=model_path)


def flatten_ids(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(every id of ``ids`` concatenated [sum of lengths], each list's length [len(ids)]),
    both int64."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


def _per_record_names(kind: RecordKind) -> list[str]:
    """The names of a shard set's per-record arrays (``<name>.npy``)."""
    names = [f"{side}_{what}" for side in kind.sides for what in ("lengths", "sizes")]
    return names + [name for name, _ in kind.counts]


def _encode_chunk(
    task: tuple[str, str, int, list[Any]],
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Parses and encodes one chunk of a ``(kind name, path, first line number, items)``.

    Returns:
      (per side: its varint bytes; the per-record arrays in ``_per_record_names`` order;
      blank lines).
    """
    kind_name, path_text, first_line, items = task
    assert _PROCESSOR is not None
    kind, path = KINDS[kind_name], Path(path_text)
    is_jsonl = is_jsonl_file(path)
    records = [
        parse_record(kind, item, first_line + i, path, is_jsonl) for i, item in enumerate(items)
    ]
    records = [r for r in records if r is not None]
    encoded: list[np.ndarray] = []
    per_record: list[np.ndarray] = []
    for side in range(len(kind.sides)):
        flat, lengths = flatten_ids(_PROCESSOR.encode([r[side] for r in records]))
        token_bytes = np.concatenate(([0], np.cumsum(varint_sizes(flat))))
        token_ends = np.cumsum(lengths)
        sizes = token_bytes[token_ends] - token_bytes[token_ends - lengths]
        encoded.append(encode_varints(flat))
        per_record += [lengths, sizes]
    for _, count in kind.counts:
        per_record.append(np.fromiter(map(count, records), dtype=np.int64, count=len(records)))
    return encoded, per_record, len(items) - len(records)


def _smallest_unsigned(values: np.ndarray) -> np.ndarray:
    """``values`` as uint16, or uint32 where one does not fit."""
    fits = not len(values) or int(values.max()) <= np.iinfo(np.uint16).max
    return values.astype(np.uint16 if fits else np.uint32)


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
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = _per_record_names(kind)
    per_record: dict[str, list[np.ndarray]] = {name: [] for name in names}
    blank = 0
    # fork: workers need nothing of the parent but this module, and spawn would re-run an
    # unguarded script's top level (a notebook's, or a user's train.py) in every worker.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    try:
        with contextlib.ExitStack() as stack:
            side_files = [
                stack.enter_context(open(tmp / f"{side}.bin", "wb")) for side in kind.sides
            ]
            pool = stack.enter_context(
                context.Pool(workers, _load_processor, (str(tokenizer_path),))
            )
            pending: collections.deque[Any] = collections.deque()

            def drain_one() -> None:
                nonlocal blank
                encoded, arrays, skipped = pending.popleft().get()
                for side_file, data in zip(side_files, encoded, strict=True):
                    side_file.write(data.tobytes())
                for name, values in zip(names, arrays, strict=True):
                    per_record[name].append(values)
                blank += skipped

            for first, items in iter_chunks(source, kind):
                task = (kind.name, str(source), first, items)
                pending.append(pool.apply_async(_encode_chunk, (task,)))
                if len(pending) >= 2 * workers:  # bounded memory: a few chunks in flight
                    drain_one()
            while pending:
                drain_one()
        for name, parts in per_record.items():
            values = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            np.save(tmp / f"{name}.npy", _smallest_unsigned(values))
        count = sum(len(x) for x in per_record[names[0]])
        manifest = {
            **manifest,
            "kind": kind.name,
            "encoding": "leb128",
            f"num_{kind.name}": count,
            "blank_lines": blank,
        }
        write_atomic(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class TokenShards:
    """A shard set, memory-mapped: the ids of record i on each side, the per-record lengths
    in memory, and the kind's per-record counts (mapped)."""

    def __init__(self, directory: Path, kind: RecordKind) -> None:
        self.directory = directory
        self.kind = kind
        self.manifest = json.loads((directory / MANIFEST_FILE).read_text())
        self._bytes: dict[str, np.ndarray] = {}
        self._offsets: dict[str, np.ndarray] = {}
        self.lengths: dict[str, np.ndarray] = {}
        for side in kind.sides:
            size = (directory / f"{side}.bin").stat().st_size
            self._bytes[side] = (
                np.memmap(directory / f"{side}.bin", dtype=np.uint8, mode="r", shape=(size,))
                if size
                else np.zeros(0, np.uint8)
            )
            sizes = np.load(directory / f"{side}_sizes.npy")
            self._offsets[side] = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
            self.lengths[side] = np.load(directory / f"{side}_lengths.npy").astype(np.int32)
        self.counts: dict[str, np.ndarray] = {
            name: np.load(directory / f"{name}.npy", mmap_mode="r") for name, _ in kind.counts
        }

    def __len__(self) -> int:
        return len(self.lengths[self.kind.sides[0]])

    @property
    def key(self) -> str:
        return self.directory.name

    def ids(self, side: str, index: int) -> np.ndarray:
        """The token ids of record ``index``'s ``side`` (e.g. src, tgt, text), without BOS or
        EOS."""
        offsets = self._offsets[side]
        return decode_varints(self._bytes[side][offsets[index] : offsets[index + 1]])

    def identity(self) -> dict[str, Any]:
        """What identifies the training data read from this set (the logdir records it): the
        set, its source file and its tokenizer."""
        return {
            "data": str(self.directory),
            "sources": [self.manifest["source"]],
            "tokenizer_sha256": self.manifest["tokenizer_sha256"],
        }


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
    shards_dir = cache_dir / "shards"
    fingerprint = file_fingerprint(source, shards_dir)
    tokenizer_sha = sha256_of(tokenizer_path)
    material = f"{FORMAT_VERSION}\n{fingerprint['sha256']}\n{tokenizer_sha}"
    if kind is not PAIRS:  # pairs keep the keys they had before there were other kinds
        material += f"\n{kind.name}"
    key = hashlib.sha256(material.encode()).hexdigest()[:16]
    directory = shards_dir / f"{source.stem}-{key}"
    if not (directory / MANIFEST_FILE).is_file():
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": fingerprint,
            "tokenizer_sha256": tokenizer_sha,
        }
        build_token_shards(
            source, kind, tokenizer_path, directory, manifest, workers or os.cpu_count() or 1
        )
    return TokenShards(directory, kind)


def open_pair_shards(
    source: Path, tokenizer_path: Path, cache_dir: Path, workers: int = 0
) -> TokenShards:
    """The shard set of ``source``'s pairs (see ``open_token_shards``)."""
    return open_token_shards(source, PAIRS, tokenizer_path, cache_dir, workers)
