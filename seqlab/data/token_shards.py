"""Tokenized parallel text on disk: built once, memory-mapped by every process that trains.

A shard set is a directory ``<cache>/shards/<file stem>-<key>/`` holding

- ``src.bin`` and ``tgt.bin``: the token ids of every pair, concatenated, in the smallest
  unsigned integer type that holds the vocabulary (uint16 up to 65,536 pieces);
- ``src_offsets.npy`` and ``tgt_offsets.npy``: [N + 1] int64, pair i's ids are
  ``bin[offsets[i]:offsets[i + 1]]`` (no BOS or EOS);
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from seqlab.core.atomic_files import write_atomic
from seqlab.core.file_hash import sha256_of
from seqlab.data.text_pairs import check_data_file, is_jsonl_file, parse_pair_line

FORMAT_VERSION = 1
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


def iter_pairs(path: Path, limit: int = 0) -> Iterator[tuple[str, str]]:
    """The (source, target) pairs of a TSV or JSONL file, streamed; the first ``limit``
    (0 = all)."""
    path = check_data_file(path)
    is_jsonl = is_jsonl_file(path)
    count = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            pair = parse_pair_line(raw, line_no, path, is_jsonl)
            if pair is None:
                continue
            yield pair
            count += 1
            if count == limit:
                return


def write_pair_sample(
    path: Path, limit: int, max_pairs: int, seed: int, source_out: Path, target_out: Path
) -> int:
    """Writes the sources and the targets of the first ``limit`` pairs (0 = all) to two text
    files, one sentence a line: every pair, or a seeded sample of ``max_pairs`` of them in
    file order. Two passes over the file; memory holds one flag per pair.

    Returns:
      The number of pairs written.
    """
    total = sum(1 for _ in iter_pairs(path, limit))
    keep = None
    if total > max_pairs:
        keep = np.zeros(total, dtype=bool)
        keep[np.random.default_rng(seed).choice(total, size=max_pairs, replace=False)] = True
    written = 0
    with source_out.open("w") as source, target_out.open("w") as target:
        for index, (src, tgt) in enumerate(iter_pairs(path, limit)):
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


def _encode_chunk(
    task: tuple[str, int, list[bytes], str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Parses and encodes one chunk of lines.

    Returns:
      (source ids concatenated, source lengths, target ids, target lengths, blank lines).
    """
    path_text, first_line, lines, dtype = task
    assert _PROCESSOR is not None
    path = Path(path_text)
    is_jsonl = is_jsonl_file(path)
    sources, targets = [], []
    for offset, raw in enumerate(lines):
        pair = parse_pair_line(raw, first_line + offset, path, is_jsonl)
        if pair is not None:
            sources.append(pair[0])
            targets.append(pair[1])
    out = []
    for texts in (sources, targets):
        ids = _PROCESSOR.encode(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(
            itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum())
        )
        out += [flat, lengths]
    return out[0], out[1], out[2], out[3], len(lines) - len(sources)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids below ``vocab_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def build_pair_shards(
    source: Path, tokenizer_path: Path, out_dir: Path, manifest: dict[str, Any], workers: int
) -> None:
    """Encodes every pair of ``source`` into a new shard set at ``out_dir``.

    Raises:
      DataFormatError: naming the file and line of a malformed line (nothing is left behind).
    """
    vocab_size = spm.SentencePieceProcessor(model_file=str(tokenizer_path)).get_piece_size()
    dtype = token_dtype(vocab_size)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    lengths: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
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
            chunks = iter_line_chunks(source)

            def drain_one() -> None:
                nonlocal blank
                src, src_lengths, tgt, tgt_lengths, skipped = pending.popleft().get()
                src_file.write(src.tobytes())
                tgt_file.write(tgt.tobytes())
                lengths["src"].append(src_lengths)
                lengths["tgt"].append(tgt_lengths)
                blank += skipped

            for first, lines in chunks:
                task = (str(source), first, lines, dtype.str)
                pending.append(pool.apply_async(_encode_chunk, (task,)))
                if len(pending) >= 2 * workers:  # bounded memory: a few chunks in flight
                    drain_one()
            while pending:
                drain_one()
        for side in ("src", "tgt"):
            side_lengths = np.concatenate(lengths[side]) if lengths[side] else np.zeros(0, np.int64)
            offsets = np.concatenate([[0], np.cumsum(side_lengths)]).astype(np.int64)
            np.save(tmp / f"{side}_offsets.npy", offsets)
        count = sum(len(x) for x in lengths["src"])
        manifest = {**manifest, "dtype": dtype.str, "num_pairs": count, "blank_lines": blank}
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
        dtype = np.dtype(self.manifest["dtype"])
        self._tokens = {}
        self._offsets = {}
        self.lengths = {}
        for side in ("src", "tgt"):
            offsets = np.load(directory / f"{side}_offsets.npy", mmap_mode="r")
            size = (directory / f"{side}.bin").stat().st_size // dtype.itemsize
            self._tokens[side] = (
                np.memmap(directory / f"{side}.bin", dtype=dtype, mode="r", shape=(size,))
                if size
                else np.zeros(0, dtype)
            )
            self._offsets[side] = offsets
            self.lengths[side] = np.diff(offsets).astype(np.int32)

    def __len__(self) -> int:
        return int(self.manifest["num_pairs"])

    @property
    def key(self) -> str:
        return self.directory.name

    def ids(self, side: str, index: int) -> np.ndarray:
        """The token ids of pair ``index``'s ``side`` (src or tgt), without BOS or EOS."""
        offsets = self._offsets[side]
        return self._tokens[side][offsets[index] : offsets[index + 1]]


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
