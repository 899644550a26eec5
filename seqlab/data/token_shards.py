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
reading the text (seqlab.data.shard_cache, which the speech index shares). Reading maps the
files (``numpy.memmap``): only the lengths are resident, and every process of a job shares
the same pages of the OS cache.

Building streams the file in chunks of lines that worker processes parse and encode, so the
memory it takes does not grow with the corpus.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.data.shard_cache import (
    EncodedIds,
    IdsColumn,
    IdsColumnWriter,
    building,
    encode_ids,
    find_or_build,
    load_manifest,
    load_worker_tokenizer,
    map_in_order,
    worker_tokenizer,
    write_manifest,
)
from seqlab.data.text_pairs import (
    check_data_file,
    check_parquet_row,
    is_jsonl_file,
    is_parquet_file,
    iter_parquet_rows,
    parse_pair_line,
)

FORMAT_VERSION = 2
_CHUNK_LINES = 20_000


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
def _encode_chunk(task: tuple[str, int, list[Any]]) -> tuple[EncodedIds, EncodedIds, int]:
    """Parses and encodes one chunk of lines.

    Returns:
      (the sources' encoded ids, the targets', blank lines).
    """
    path_text, first_line, lines = task
    path = Path(path_text)
    is_jsonl = is_jsonl_file(path)
    sources, targets = [], []
    for offset, item in enumerate(lines):
        pair = parse_pair(item, first_line + offset, path, is_jsonl)
        if pair is not None:
            sources.append(pair[0])
            targets.append(pair[1])
    processor = worker_tokenizer()
    encoded = [encode_ids(processor.encode(texts)) for texts in (sources, targets)]
    return encoded[0], encoded[1], len(lines) - len(sources)


def build_pair_shards(
    source: Path, tokenizer_path: Path, out_dir: Path, manifest: dict[str, Any], workers: int
) -> None:
    """Encodes every pair of ``source`` into a new shard set at ``out_dir``.

    Raises:
      DataFormatError: naming the file and line of a malformed line (nothing is left behind).
    """
    blank = 0
    with building(out_dir) as tmp:
        columns = [IdsColumnWriter(tmp, "src"), IdsColumnWriter(tmp, "tgt")]
        try:
            tasks = ((str(source), first, lines) for first, lines in iter_chunks(source))
            for src, tgt, skipped in map_in_order(
                _encode_chunk, tasks, workers, load_worker_tokenizer, (str(tokenizer_path),)
            ):
                columns[0].append(src)
                columns[1].append(tgt)
                blank += skipped
        finally:
            counts = [column.close() for column in columns]
        manifest = {**manifest, "encoding": "leb128", "num_pairs": counts[0], "blank_lines": blank}
        write_manifest(tmp, manifest)


class PairShards:
    """A shard set, memory-mapped: the ids of pair i, and the per-pair lengths in memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = load_manifest(directory)
        self._columns = {side: IdsColumn(directory, side) for side in ("src", "tgt")}
        self.lengths: dict[str, np.ndarray] = {
            side: column.lengths for side, column in self._columns.items()
        }

    def __len__(self) -> int:
        return int(self.manifest["num_pairs"])

    @property
    def key(self) -> str:
        return self.directory.name

    def ids(self, side: str, index: int) -> np.ndarray:
        """The token ids of pair ``index``'s ``side`` (src or tgt), without BOS or EOS."""
        return self._columns[side].ids(index)


def open_pair_shards(
    source: Path, tokenizer_path: Path, cache_dir: Path, workers: int = 0
) -> PairShards:
    """The shard set of ``source`` encoded with ``tokenizer_path``: found by its manifest's
    key, or built (by ``workers`` processes; 0 = one per core)."""
    source = check_data_file(source)

    def build(directory: Path, manifest: dict[str, Any]) -> None:
        build_pair_shards(
            source, tokenizer_path, directory, manifest, workers or os.cpu_count() or 1
        )

    return PairShards(find_or_build(source, tokenizer_path, cache_dir, FORMAT_VERSION, build))
