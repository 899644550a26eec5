"""Tokenized parallel text on disk: built once, memory-mapped by every process that trains.

A shard set is a directory ``<cache>/shards/<file stem>-<key>/`` holding

- ``src.bin`` and ``tgt.bin``: the token ids of every pair, concatenated, as LEB128 varints
  (seqlab.data.varint: one byte for ids below 128, two below 16,384; about 1.4 bytes a
  token with SentencePiece's score-ordered ids, against uint16's 2);
- ``src_lengths.npy`` and ``tgt_lengths.npy``: [N] tokens of each pair, and
  ``src_sizes.npy`` and ``tgt_sizes.npy``: [N] bytes of each pair (uint16, or uint32 where a
  pair is longer), from which the pairs' byte offsets are computed when the set is opened;
- ``manifest.json``: the format version, the source file (path, size, mtime, sha256), the
  tokenizer's sha256, the pair count and the blank lines skipped.

The key hashes the format version, the source file's content hash and the tokenizer's, so a
changed file or tokenizer makes a new shard set and an unchanged one is found again without
reading the text: the content hash is computed once per (path, size, mtime) and remembered in
``<cache>/shards/fingerprints.json``. Shards are written under a temporary name and renamed
when whole. Reading maps the files (``numpy.memmap``): only the lengths are resident, and
every process of a job shares the same pages of the OS cache.

Building streams the file in chunks of lines that worker processes parse and encode, so the
memory it takes does not grow with the corpus.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from seqlab.core.atomic_files import write_atomic
from seqlab.core.file_hash import sha256_of
from seqlab.data.text_pairs import (
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


# ---- reading raw lines ------------------------------------------------------------------------
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


def iter_chunks(path: Path) -> Iterator[tuple[int, list[Any]]]:
    """Chunks of a pairs file: raw lines (TSV, JSONL) or (src, tgt) rows (Parquet), each with
    the number of its first line or row."""
    if is_parquet_file(path):
        return iter_parquet_rows(path, _CHUNK_LINES)
    return iter_line_chunks(path)


def parse_pair(item: Any, number: int, path: Path, is_jsonl: bool) -> tuple[str, str] | None:
    """The pair of one chunk item (a raw line, or a Parquet row), None for a blank line."""
    if isinstance(item, bytes):
        return parse_pair_line(item, number, path, is_jsonl)
    return check_parquet_row(item[0], item[1], number, path)


def iter_pairs(path: Path, limit: int = 0) -> Iterator[tuple[str, str]]:
    """The (source, target) pairs of a TSV, JSONL or Parquet file, streamed; the first
    ``limit`` (0 = all)."""
    path = check_data_file(path)
    is_jsonl = is_jsonl_file(path)
    count = 0
    for first, items in iter_chunks(path):
        for offset, item in enumerate(items):
            pair = parse_pair(item, first + offset, path, is_jsonl)
            if pair is None:
                continue
            yield pair
            count += 1
            if count == limit:
                return


def write_pair_sample(
    paths: Path | Sequence[Path],
    limit: int,
    max_pairs: int,
    seed: int,
    source_out: Path,
    target_out: Path,
) -> int:
    """Writes the sources and the targets of the first ``limit`` pairs (0 = all) of the files
    (one after the other) to two text files, one sentence a line: every pair, or a seeded
    sample of ``max_pairs`` of them in file order. Two passes over the files; memory holds one
    flag per pair.

    Returns:
      The number of pairs written.
    """
    files = [paths] if isinstance(paths, Path) else list(paths)

    def iter_all() -> Iterator[tuple[str, str]]:
        pairs = itertools.chain.from_iterable(iter_pairs(path) for path in files)
        return itertools.islice(pairs, limit or None)

    total = sum(1 for _ in iter_all())
    keep = None
    if total > max_pairs:
        keep = np.zeros(total, dtype=bool)
        keep[np.random.default_rng(seed).choice(total, size=max_pairs, replace=False)] = True
    written = 0
    with source_out.open("w") as source, target_out.open("w") as target:
        for index, (src, tgt) in enumerate(iter_all()):
            if keep is None or keep[index]:
                source.write(src + "\n")
                target.write(tgt + "\n")
                written += 1
    return written


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


def _encode_chunk(
    task: tuple[str, int, list[Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Parses and encodes one chunk of lines.

    Returns:
      (source varint bytes, source tokens per pair, source bytes per pair, the same three for
      the targets, blank lines).
    """
    path_text, first_line, lines = task
    assert _PROCESSOR is not None
    path = Path(path_text)
    is_jsonl = is_jsonl_file(path)
    sources, targets = [], []
    for offset, item in enumerate(lines):
        pair = parse_pair(item, first_line + offset, path, is_jsonl)
        if pair is not None:
            sources.append(pair[0])
            targets.append(pair[1])
    out: list[np.ndarray] = []
    for texts in (sources, targets):
        flat, lengths = flatten_ids(_PROCESSOR.encode(texts))
        token_bytes = np.concatenate(([0], np.cumsum(varint_sizes(flat))))
        token_ends = np.cumsum(lengths)
        sizes = token_bytes[token_ends] - token_bytes[token_ends - lengths]
        out += [encode_varints(flat), lengths, sizes]
    return (*out, len(lines) - len(sources))  # type: ignore[return-value]


def _smallest_unsigned(values: np.ndarray) -> np.ndarray:
    """``values`` as uint16, or uint32 where one does not fit."""
    fits = not len(values) or int(values.max()) <= np.iinfo(np.uint16).max
    return values.astype(np.uint16 if fits else np.uint32)


def build_pair_shards(
    source: Path, tokenizer_path: Path, out_dir: Path, manifest: dict[str, Any], workers: int
) -> None:
    """Encodes every pair of ``source`` into a new shard set at ``out_dir``.

    Raises:
      DataFormatError: naming the file and line of a malformed line (nothing is left behind).
    """
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = ("src_lengths", "src_sizes", "tgt_lengths", "tgt_sizes")
    per_pair: dict[str, list[np.ndarray]] = {name: [] for name in names}
    blank = 0
    # fork: workers need nothing of the parent but this module, and spawn would re-run an
    # unguarded script's top level (a notebook's, or a user's train.py) in every worker.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    try:
        with (
            open(tmp / "src.bin", "wb") as src_file,
            open(tmp / "tgt.bin", "wb") as tgt_file,
            context.Pool(workers, _load_processor, (str(tokenizer_path),)) as pool,
        ):
            pending: collections.deque[Any] = collections.deque()

            def drain_one() -> None:
                nonlocal blank
                src, src_lengths, src_sizes, tgt, tgt_lengths, tgt_sizes, skipped = (
                    pending.popleft().get()
                )
                src_file.write(src.tobytes())
                tgt_file.write(tgt.tobytes())
                values = (src_lengths, src_sizes, tgt_lengths, tgt_sizes)
                for name, value in zip(names, values, strict=True):
                    per_pair[name].append(value)
                blank += skipped

            for first, lines in iter_chunks(source):
                pending.append(pool.apply_async(_encode_chunk, ((str(source), first, lines),)))
                if len(pending) >= 2 * workers:  # bounded memory: a few chunks in flight
                    drain_one()
            while pending:
                drain_one()
        for name, parts in per_pair.items():
            values = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            np.save(tmp / f"{name}.npy", _smallest_unsigned(values))
        count = sum(len(x) for x in per_pair["src_lengths"])
        manifest = {**manifest, "encoding": "leb128", "num_pairs": count, "blank_lines": blank}
        write_atomic(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class PairShards:
    """A shard set, memory-mapped: the ids of pair i, and the per-pair lengths in memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = json.loads((directory / MANIFEST_FILE).read_text())
        self._bytes: dict[str, np.ndarray] = {}
        self._offsets: dict[str, np.ndarray] = {}
        self.lengths: dict[str, np.ndarray] = {}
        for side in ("src", "tgt"):
            size = (directory / f"{side}.bin").stat().st_size
            self._bytes[side] = (
                np.memmap(directory / f"{side}.bin", dtype=np.uint8, mode="r", shape=(size,))
                if size
                else np.zeros(0, np.uint8)
            )
            sizes = np.load(directory / f"{side}_sizes.npy")
            self._offsets[side] = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
            self.lengths[side] = np.load(directory / f"{side}_lengths.npy").astype(np.int32)

    def __len__(self) -> int:
        return int(self.manifest["num_pairs"])

    @property
    def key(self) -> str:
        return self.directory.name

    def ids(self, side: str, index: int) -> np.ndarray:
        """The token ids of pair ``index``'s ``side`` (src or tgt), without BOS or EOS."""
        offsets = self._offsets[side]
        return decode_varints(self._bytes[side][offsets[index] : offsets[index + 1]])


def open_pair_shards(
    source: Path, tokenizer_path: Path, cache_dir: Path, workers: int = 0
) -> PairShards:
    """The shard set of ``source`` encoded with ``tokenizer_path``: found by its manifest's
    key, or built (by ``workers`` processes; 0 = one per core)."""
    source = check_data_file(source)
    shards_dir = cache_dir / "shards"
    fingerprint = file_fingerprint(source, shards_dir)
    tokenizer_sha = sha256_of(tokenizer_path)
    key = hashlib.sha256(
        f"{FORMAT_VERSION}\n{fingerprint['sha256']}\n{tokenizer_sha}".encode()
    ).hexdigest()[:16]
    directory = shards_dir / f"{source.stem}-{key}"
    if not (directory / MANIFEST_FILE).is_file():
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": fingerprint,
            "tokenizer_sha256": tokenizer_sha,
        }
        build_pair_shards(
            source, tokenizer_path, directory, manifest, workers or os.cpu_count() or 1
        )
    return PairShards(directory)
