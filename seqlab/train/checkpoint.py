"""Crash-safe checkpoints: atomic writes, a checksum, and loading that runs no code.

A checkpoint file is ``MAGIC + sha256(payload) + payload`` where the payload is a
``torch.save`` of plain containers and tensors, read back with ``weights_only=True``. It is
written under a temporary name, flushed, fsynced and renamed, so a crash never leaves a
half-written file under a checkpoint's name. A file whose checksum does not match is
refused (and kept on disk for inspection); loading falls back to the previous good one.

Multi-process runs write a directory per step instead (``ckpt-<step>.dcp``, see
seqlab.distributed.checkpoint); both kinds are listed, pruned and loaded here alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import re
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from seqlab.core.atomic_files import write_atomic

MAGIC = b"SEQLAB-CKPT-1\n"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d+)\.(?:pt|dcp)$")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file."""


class IncompatibleCheckpointError(CheckpointError):
    """A whole, verified checkpoint that this run cannot use (a newer format version, or
    another model's weights). Unlike a corrupt file it is not skipped for an older one: the
    older ones come from the same writer."""


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint (file or .dcp directory) in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


_TEMPORARY = re.compile(r"^\.ckpt-\d+\.(?:pt|dcp)\.tmp-(\d+)$")


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
        _remove(path)
        removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def prune_checkpoints(directory: Path, keep: int, protected: Collection[int] = ()) -> None:
    """Deletes all but the newest ``keep`` checkpoints (none if ``keep`` <= 0), and never
    those of the ``protected`` steps (e.g. the best by a dev metric)."""
    if keep > 0:
        for step, old in list_checkpoints(directory)[:-keep]:
            if step not in protected:
                _remove(old)


def encode_checkpoint(payload: dict[str, Any]) -> bytes:
    """``MAGIC + sha256(data) + data`` with ``data`` the torch.save of ``payload``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    return MAGIC + hashlib.sha256(data).digest() + data


def save_checkpoint(directory: Path, step: int, payload: dict[str, Any], keep: int = 0) -> Path:
    """Writes ``payload`` as the checkpoint of ``step`` and keeps the newest ``keep`` ones
    (all with 0; the trainer prunes on its own, sparing the best ones).

    Raises:
      CheckpointError: when the write fails (e.g. disk full); older checkpoints are untouched.
    """
    encoded = encode_checkpoint({"format_version": FORMAT_VERSION, "step": step, **payload})
    path = checkpoint_path(directory, step)
    existed = path.exists()
    aside = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        aside = _keep_aside(path)
        write_atomic(path, encoded)
        write_atomic(directory / "latest", (path.name + "\n").encode())
    except OSError as e:
        # Reported as not saved: leave the directory as it was.
        with contextlib.suppress(OSError):
            if aside is not None:
                os.replace(aside, path)
            elif not existed:
                path.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not save checkpoint {path} ({e.strerror or e}); "
            f"the previous checkpoints in {directory} are kept"
        ) from e
    if aside is not None:
        log.warning("%s existed (unreadable, or another run's); kept it as %s", path, aside.name)
    prune_checkpoints(directory, keep)
    return path


def write_checkpoint_file(path: Path, step: int, payload: dict[str, Any]) -> Path:
    """Writes ``payload`` as a checkpoint file at ``path``, outside the run's rotation (e.g. an
    averaged checkpoint): the same format, written atomically, never pruned.

    Raises:
      CheckpointError: when the write fails; nothing is left under ``path``'s name.
    """
    encoded = encode_checkpoint({"format_version": FORMAT_VERSION, "step": step, **payload})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, encoded)
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path} ({e.strerror or e})") from e
    return path


def _keep_aside(path: Path) -> Path | None:
    """Gives the file at ``path`` a second name ``<name>.replaced-N`` before it is overwritten.

    Only a run that fell back past an unreadable checkpoint reaches its step again; the file
    stays for inspection, never lost. A hard link costs no space; a copy is the fallback.
    """
    if not path.is_file():
        return None
    n = 1
    while (aside := path.with_name(f"{path.name}.replaced-{n}")).exists():
        n += 1
    try:
        os.link(path, aside)
    except OSError:  # no hard links on this filesystem
        shutil.copyfile(path, aside)
    return aside


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Reads and verifies one checkpoint (a file, or a .dcp directory read whole).

    Raises:
      CheckpointError: if the file is truncated, corrupt, of another format, or holds
        anything but tensors and plain containers (no code is ever executed).
    """
    if path.is_dir():
        from seqlab.distributed.checkpoint import read_sharded_checkpoint

        return read_sharded_checkpoint(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    return decode_checkpoint(raw, path)


def decode_checkpoint(raw: bytes, path: Path) -> dict[str, Any]:
    """The payload of checkpoint bytes ``raw`` read from ``path`` (named in errors)."""
    header = len(MAGIC) + 32
    if not raw.startswith(MAGIC) or len(raw) < header:
        raise CheckpointError(_header_problem(raw, path))
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
    version = payload.get("format_version") if isinstance(payload, dict) else "?"
    if type(version) is not int or version != FORMAT_VERSION:
        newer = type(version) is int and version > FORMAT_VERSION
        shown = version if type(version) is int or version == "?" else ascii(version)[:40]
        shown = str(shown).splitlines()[0]  # one line, even for a forged tensor
        raise IncompatibleCheckpointError(
            f"checkpoint {path} has format version {shown}, this seqlab reads version "
            f"{FORMAT_VERSION}"
            + ("; it was written by a newer seqlab: upgrade seqlab to load it" if newer else "")
        )
    return payload


def _header_problem(raw: bytes, path: Path) -> str:
    """What is wrong with a file that does not start with a whole header."""
    if not raw:
        return f"checkpoint {path} is empty (truncated)"
    if MAGIC.startswith(raw) or raw.startswith(MAGIC):
        return f"checkpoint {path} is truncated ({len(raw)} bytes, shorter than its header)"
    other = re.match(rb"SEQLAB-CKPT-(\d+)\n", raw)
    if other:
        return (
            f"checkpoint {path} has file format {int(other.group(1))}, this seqlab reads "
            f"{MAGIC.strip().decode()} (written by another seqlab version, or corrupt)"
        )
    kind = "a plain torch.save file" if raw.startswith(b"PK\x03\x04") else "another kind of file"
    return (
        f"{path} is not a seqlab checkpoint: it does not start with {MAGIC.strip().decode()} "
        f"(corrupt, or {kind})"
    )


def load_latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that verifies, or None if there is none.

    Corrupt files are reported and skipped, never deleted.

    Raises:
      IncompatibleCheckpointError: the newest whole checkpoint has a newer format version;
        older checkpoints are not tried, since they are not what the run last wrote.
    """
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path)
        except IncompatibleCheckpointError:
            raise
        except CheckpointError as e:
            log.warning("%s; trying the previous checkpoint", e)
    return None
