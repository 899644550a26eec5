"""Distributed checkpoints: torch.distributed.checkpoint (DCP), one directory per step.

``checkpoints/ckpt-<step>.dcp/`` holds each rank's shard files (``__<rank>_0.distcp``, written
by that rank: nothing is gathered on one rank), DCP's ``.metadata``, ``extra.pt`` (config,
data-stream position, random generators; the seqlab single-file format) and ``MANIFEST.json``
(sha256 of every file, each rank hashing its own). The directory is written under a temporary
name and renamed by rank 0 once every rank has finished, so a crash never leaves a partial
checkpoint under a checkpoint's name; a directory whose files do not match the manifest is
refused, and loading falls back to the previous good checkpoint.

Tensors are stored by parameter name with their global shapes, so a checkpoint loads at any
world size and strategy (DDP or FSDP2), and in a single process. Loading runs no code: the
metadata is unpickled with an allow-list of DCP's own record classes, and everything else is
read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

from seqlab.core.atomic_files import fsync_dir, write_atomic
from seqlab.core.file_hash import sha256_of
from seqlab.distributed.optimizer_state import optimizer_state_by_index
from seqlab.distributed.process_group import World, barrier, broadcast_object, gather_objects
from seqlab.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    decode_checkpoint,
    encode_checkpoint,
)

EXTRA_FILE = "extra.pt"
MANIFEST_FILE = "MANIFEST.json"
METADATA_FILE = ".metadata"


def sharded_checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"ckpt-{step:08d}.dcp"


# ---- safe metadata --------------------------------------------------------------------------

_ALLOWED_CLASSES = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata, refusing every class but DCP's plain records and dtypes."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            (module, name) in _ALLOWED_CLASSES
            or module == "torch.distributed.checkpoint.metadata"
            or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        )
        if not allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in DCP metadata")
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with the metadata read through an allow-list instead of pickle.load."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            try:
                metadata = _MetadataUnpickler(stream).load()
            except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
                raise CheckpointError(f"refusing checkpoint metadata {path}: {e}") from None
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


# ---- manifest -------------------------------------------------------------------------------


def verify_sharded_checkpoint(path: Path) -> None:
    """Checks every file of a .dcp directory against its manifest, and its metadata.

    Raises:
      CheckpointError: naming the missing or corrupt file.
    """
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has no readable {MANIFEST_FILE} ({e})") from None
    for name, expected in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} lacks {name}, listed in its manifest")
        if sha256_of(file) != expected:
            raise CheckpointError(f"checkpoint file {file} is corrupt (checksum mismatch)")
    SafeFileSystemReader(path).read_metadata()  # refuses metadata that would run code


# ---- save -----------------------------------------------------------------------------------


def save_sharded_checkpoint(
    directory: Path,
    step: int,
    state: dict[str, Any],
    extra: dict[str, Any],
    world: World,
) -> Path:
    """Saves a checkpoint from every rank at once (a collective: all ranks call it).

    Args:
      directory: the run's checkpoint directory (shared by all ranks, e.g. over NFS).
      step: the training step.
      state: this rank's tensors, e.g. {"model": ..., "optimizer": ...} from
        ``torch.distributed.checkpoint.state_dict.get_state_dict`` (DTensor shards under FSDP).
      extra: small plain data written by rank 0 (config, data-stream position, rngs).
      world: this process's place in the job.

    Returns:
      The checkpoint's directory.

    Raises:
      CheckpointError: on rank 0 when a write fails; older checkpoints are untouched.
    """
    final = sharded_checkpoint_path(directory, step)
    tmp = directory / broadcast_object(f".{final.name}.tmp-{os.getpid()}", world)
    try:
        if world.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(world)
        dcp.save(state, storage_writer=FileSystemWriter(tmp, sync_files=True))
        own = {p.name: sha256_of(p) for p in sorted(tmp.glob(f"__{world.rank}_*.distcp"))}
        hashes = gather_objects(own, world)
        if world.is_main:
            payload = {"format_version": FORMAT_VERSION, "step": step, **extra}
            write_atomic(tmp / EXTRA_FILE, encode_checkpoint(payload))
            files = {name: digest for rank_files in hashes for name, digest in rank_files.items()}
            files[EXTRA_FILE] = sha256_of(tmp / EXTRA_FILE)
            files[METADATA_FILE] = sha256_of(tmp / METADATA_FILE)
            manifest = {"step": step, "world_size": world.world_size, "files": files}
            write_atomic(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
            if final.exists():  # the same step saved before a crash; replaced by this one
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_dir(directory)
            write_atomic(directory / "latest", (final.name + "\n").encode())
    except OSError as e:
        if world.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not save checkpoint {final} ({e.strerror or e}); "
            f"the previous checkpoints in {directory} are kept"
        ) from e
    barrier(world)
    return final


# ---- load -----------------------------------------------------------------------------------


def read_extra(path: Path) -> dict[str, Any]:
    """The plain data (config, step, stream position, rngs) of a verified .dcp directory."""
    file = path / EXTRA_FILE
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {file}: {e.strerror or e}") from e
    return decode_checkpoint(raw, file)


def sharded_model_shapes(path: Path) -> dict[str, torch.Tensor]:
    """The model weights' names and global shapes in a .dcp directory, as meta tensors
    (nothing is read but the verified metadata)."""
    metadata = SafeFileSystemReader(path).read_metadata()
    return {
        key.removeprefix("model."): torch.empty(tuple(entry.size), device="meta")
        for key, entry in metadata.state_dict_metadata.items()
        if key.startswith("model.") and hasattr(entry, "size")
    }


def load_sharded_state(path: Path, state: dict[str, Any]) -> None:
    """Fills ``state`` (this rank's tensors, DTensor shards or full tensors) in place from a
    .dcp directory saved at any world size; a collective under torchrun."""
    try:
        dcp.load(state, storage_reader=SafeFileSystemReader(path))
    except CheckpointError:
        raise
    except Exception as e:  # DCP wraps per-rank failures in its own exception types
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line}") from e


def read_sharded_checkpoint(path: Path) -> dict[str, Any]:
    """A .dcp directory read whole into one process, in the single-file payload's layout.

    The model comes back as full tensors by name and the optimizer state keyed by parameter
    index, as ``torch.optim.Optimizer.load_state_dict`` expects.
    """
    verify_sharded_checkpoint(path)
    payload = read_extra(path)
    try:
        with warnings.catch_warnings():
            # Reading in one process is the intent here, not a missing process group.
            warnings.filterwarnings("ignore", message="torch.distributed is unavailable")
            tensors = _load_state_dict_from_keys(storage_reader=SafeFileSystemReader(path))
    except CheckpointError:
        raise
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line}") from e
    payload["model"] = tensors["model"]
    payload["optimizer"] = optimizer_state_by_index(tensors["optimizer"])
    return payload
