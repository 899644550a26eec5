"""What the tokenized caches under ``<cache>/shards/`` share: source fingerprints, cache keys,
atomic builds, manifests, builds by worker processes, and columns of token ids read by
``numpy.memmap``.

A cached set is a directory named by a key that hashes everything its content depends on
(format version, source content hash, tokenizer hash, settings), so a changed input makes a
new set and an unchanged one is found again without reading the source: its content hash is
computed once per (path, size, mtime) and remembered in ``<cache>/shards/fingerprints.json``.
A set is written under a temporary name and renamed when whole, and holds a
``manifest.json`` describing it.

A column of token ids (``<name>.bin``, ``<name>_lengths.npy``, ``<name>_sizes.npy``) holds
the ids of every row, concatenated as LEB128 varints (seqlab.data.varint), with each row's
token count and byte count (uint16, or uint32 where a row is longer); the rows' byte offsets
are computed when the column is opened.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import sentencepiece as spm

from seqlab.core.atomic_files import write_atomic
from seqlab.core.file_hash import sha256_of
from seqlab.data.varint import decode_varints, encode_varints, varint_sizes

MANIFEST_FILE = "manifest.json"
FINGERPRINTS_FILE = "fingerprints.json"


# ---- keys and manifests -----------------------------------------------------------------------
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


def cache_key(*parts: object) -> str:
    """16 hex digits of the sha256 of ``parts`` (one a line): a cached set's name."""
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()[:16]


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    write_atomic(directory / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())


def load_manifest(directory: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((directory / MANIFEST_FILE).read_text())
    return manifest


def is_built(directory: Path) -> bool:
    """Whether the set at ``directory`` is whole (its manifest is written last)."""
    return (directory / MANIFEST_FILE).is_file()


def data_identity(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a logdir records of the set it trains on (seqlab.train.run_context): the set,
    its source file and the tokenizer."""
    return {
        "data": str(directory),
        "sources": [manifest["source"]],
        "tokenizer_sha256": manifest["tokenizer_sha256"],
    }


def find_or_build(
    source: Path,
    tokenizer_path: Path,
    cache_dir: Path,
    format_version: int,
    build: Callable[[Path, dict[str, Any]], None],
    settings: dict[str, Any] | None = None,
) -> Path:
    """The directory of the set made from ``source`` with ``tokenizer_path`` (and the
    builder's ``settings``): found by its key, or made by ``build(directory, manifest)``,
    which gets the manifest's first fields (format version, source, tokenizer, settings)."""
    shards_dir = cache_dir / "shards"
    fingerprint = file_fingerprint(source, shards_dir)
    tokenizer_sha = sha256_of(tokenizer_path)
    extra = [sorted(settings.items())] if settings else []
    key = cache_key(format_version, fingerprint["sha256"], tokenizer_sha, *extra)
    directory = shards_dir / f"{source.stem}-{key}"
    if not is_built(directory):
        manifest = {
            "format_version": format_version,
            "source": fingerprint,
            "tokenizer_sha256": tokenizer_sha,
        }
        build(directory, {**manifest, "settings": settings} if settings else manifest)
    return directory


@contextlib.contextmanager
def building(directory: Path) -> Iterator[Path]:
    """A temporary directory beside ``directory`` to build a set in: renamed to ``directory``
    when the block ends, removed (leaving nothing) when it raises."""
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- building in worker processes -------------------------------------------------------------
_TOKENIZER: spm.SentencePieceProcessor | None = None


def load_worker_tokenizer(model_path: str) -> None:
    """Pool initializer: loads the SentencePiece model that ``worker_tokenizer`` returns."""
    global _TOKENIZER
    _TOKENIZER = spm.SentencePieceProcessor(model_file=model_path)


def worker_tokenizer() -> spm.SentencePieceProcessor:
    assert _TOKENIZER is not None, "load_worker_tokenizer was not called"
    return _TOKENIZER


def map_in_order(
    function: Callable[[Any], Any],
    tasks: Iterable[Any],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
) -> Iterator[Any]:
    """``function(task)`` of each task, in order, computed by ``workers`` processes with a
    few tasks in flight (so memory does not grow with their number); in this process when
    ``workers`` is 1. An exception of a task is raised here, in the tasks' order."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(function, tasks)
        return
    # fork: workers need nothing of the parent but their module, and spawn would re-run an
    # unguarded script's top level (a notebook's, or a user's train.py) in every worker.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer, initargs) as pool:
        pending: collections.deque[Any] = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(function, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---- columns of token ids ---------------------------------------------------------------------
def flatten_ids(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(every id of ``ids`` concatenated [sum of lengths], each list's length [len(ids)]),
    both int64."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


EncodedIds = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(varint bytes [total bytes] uint8, tokens per row [R], bytes per row [R])."""


def encode_ids(ids: list[list[int]]) -> EncodedIds:
    """Rows of token ids as a column's varint bytes and per-row token and byte counts."""
    flat, lengths = flatten_ids(ids)
    token_bytes = np.concatenate(([0], np.cumsum(varint_sizes(flat))))
    token_ends = np.cumsum(lengths)
    sizes = token_bytes[token_ends] - token_bytes[token_ends - lengths]
    return encode_varints(flat), lengths, sizes


def smallest_unsigned(values: np.ndarray) -> np.ndarray:
    """``values`` as uint16, or uint32 where one does not fit."""
    fits = not len(values) or int(values.max()) <= np.iinfo(np.uint16).max
    return values.astype(np.uint16 if fits else np.uint32)


def save_array(path: Path, parts: list[np.ndarray], dtype: type | None = None) -> int:
    """Saves the concatenated ``parts`` as ``dtype`` (None = the smallest unsigned type
    that fits) to a ``.npy`` file; returns its length."""
    values = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    np.save(path, smallest_unsigned(values) if dtype is None else values.astype(dtype))
    return len(values)


class IdsColumnWriter:
    """Appends encoded rows to the column ``name`` of a set being built; ``close`` writes
    the per-row counts."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        self._file: BinaryIO = open(directory / f"{name}.bin", "wb")  # noqa: SIM115
        self._lengths: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []

    def append(self, encoded: EncodedIds) -> None:
        data, lengths, sizes = encoded
        self._file.write(data.tobytes())
        self._lengths.append(lengths)
        self._sizes.append(sizes)

    def close(self) -> int:
        """Finishes the column; returns its number of rows."""
        self._file.close()
        save_array(self.directory / f"{self.name}_sizes.npy", self._sizes)
        return save_array(self.directory / f"{self.name}_lengths.npy", self._lengths)


def map_bytes(path: Path) -> np.ndarray:
    """The bytes of ``path``, memory-mapped (read-only) as uint8."""
    size = path.stat().st_size
    if not size:  # numpy cannot map an empty file
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size,))


class IdsColumn:
    """A column of token ids, memory-mapped: the ids of row i, and every row's length."""

    def __init__(self, directory: Path, name: str) -> None:
        self._bytes = map_bytes(directory / f"{name}.bin")
        sizes = np.load(directory / f"{name}_sizes.npy")
        self._offsets = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        self.lengths: np.ndarray = np.load(directory / f"{name}_lengths.npy").astype(np.int32)
        """[rows] tokens of each row."""

    def __len__(self) -> int:
        return len(self.lengths)

    def ids(self, index: int) -> np.ndarray:
        """The token ids of row ``index``: [length] int64."""
        return decode_varints(self._bytes[self._offsets[index] : self._offsets[index + 1]])
