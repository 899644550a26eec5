"""Crash-safe checkpoints: atomic writes, a checksum, and loading that runs no code.

A checkpoint file is ``MAGIC + sha256(payload) + payload`` where the payload is a
``torch.save`` of plain containers and tensors, read back with ``weights_only=True``. It is
written under a temporary name, flushed, fsynced and renamed, so a crash never leaves a
half-written file under a checkpoint's name. A file whose checksum does not match is
refused (and kept on disk for inspection); loading falls back to the previous good one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

MAGIC = b"SEQLAB-CKPT-1\n"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d+)\.pt$")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file."""


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"^\.ckpt-\d+\.pt\.tmp-(\d+)$")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Deletes half-written checkpoint files left by processes that no longer run.

    They are never valid checkpoints (a checkpoint exists only once renamed); a temporary of a
    live process, e.g. a concurrent writer, is left alone.

    Returns:
      The removed paths.
    """
    removed = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None:
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # the writer is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, owned by someone else
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Writes ``payload`` as the checkpoint of ``step`` and keeps the newest ``keep`` ones.

    Raises:
      CheckpointError: when the write fails (e.g. disk full); older checkpoints are untouched.
    """
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "step": step, **payload}, buffer)
    data = buffer.getvalue()
    path = checkpoint_path(directory, step)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, MAGIC + hashlib.sha256(data).digest() + data)
        _write_atomic(directory / "latest", (path.name + "\n").encode())
    except OSError as e:
        raise CheckpointError(
            f"could not save checkpoint {path} ({e.strerror or e}); "
            f"the previous checkpoints in {directory} are kept"
        ) from e
    if keep > 0:
        for _, old in list_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Reads and verifies one checkpoint file.

    Raises:
      CheckpointError: if the file is truncated, corrupt, of another format, or holds
        anything but tensors and plain containers (no code is ever executed).
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    header = len(MAGIC) + 32
    if not raw.startswith(MAGIC) or len(raw) < header:
        raise CheckpointError(f"{path} is not a seqlab checkpoint (bad header or truncated)")
    digest, data = raw[len(MAGIC) : header], raw[header:]
    if hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (checksum mismatch)")
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refusing checkpoint {path}: it holds more than tensors and plain data ({first_line})"
        ) from None
    except Exception as e:
        # A valid checksum over undecodable bytes (a bug in the writer or a forged file): the
        # zip reader and unpickler raise many types (IndexError, KeyError, ...); all are refusals.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"refusing checkpoint {path}: it cannot be decoded ({type(e).__name__}: {first_line})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version "
            f"{payload.get('format_version') if isinstance(payload, dict) else '?'}, "
            f"this seqlab reads version {FORMAT_VERSION}"
        )
    return payload


def load_latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that verifies, or None if there is none.

    Corrupt files are reported and skipped, never deleted.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            log.warning("%s; trying the previous checkpoint", e)
    return None
