"""Tests for seqlab.train.checkpoint."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch

from seqlab.train import checkpoint as ckpt
from seqlab.train.checkpoint import (
    MAGIC,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)


def _payload(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return {
        "model": model.state_dict(),
        "rng": torch.get_rng_state(),
        "data_state": {"epoch": 1, "index": 7},
        "history": [1.5, 2.5],
        "config": {"__class__": "seqlab.train.experiment:ExperimentConfig", "seed": 3},
    }


def _wrap(data: bytes) -> bytes:
    """A file with a valid header and checksum around ``data``."""
    return MAGIC + hashlib.sha256(data).digest() + data


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    payload = _payload()
    path = save_checkpoint(tmp_path / "ckpts", 12, payload, keep=3)
    assert path == checkpoint_path(tmp_path / "ckpts", 12) == tmp_path / "ckpts/ckpt-00000012.pt"
    assert (tmp_path / "ckpts/latest").read_text() == "ckpt-00000012.pt\n"
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == ckpt.FORMAT_VERSION
    assert loaded["step"] == 12
    torch.testing.assert_close(loaded["model"], payload["model"])
    torch.testing.assert_close(loaded["rng"], payload["rng"])
    for key in ("data_state", "history", "config"):
        assert loaded[key] == payload[key]
    assert load_latest_checkpoint(tmp_path / "ckpts")[0] == path


def test_keeps_the_newest_k(tmp_path: Path) -> None:
    for step in (5, 10, 100, 20, 1000):
        save_checkpoint(tmp_path, step, {"x": step}, keep=3)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [20, 100, 1000]
    path, payload = load_latest_checkpoint(tmp_path)
    assert payload["x"] == 1000 and path.name == "ckpt-00001000.pt"


def test_keep_zero_keeps_all(tmp_path: Path) -> None:
    for step in range(1, 5):
        save_checkpoint(tmp_path, step, {}, keep=0)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 2, 3, 4]


def test_list_ignores_other_files(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 3, {}, keep=0)
    for name in ("latest", "ckpt-3.pt.bak", ".ckpt-00000004.pt.tmp-1", "notes.txt", "ckpt-x.pt"):
        (tmp_path / name).write_text("x")
    assert list_checkpoints(tmp_path) == [(3, tmp_path / "ckpt-00000003.pt")]
    assert list_checkpoints(tmp_path / "absent") == []
    assert load_latest_checkpoint(tmp_path / "absent") is None


@pytest.mark.parametrize("keep_bytes", [0, 5, len(MAGIC) + 10, len(MAGIC) + 32, -1])
def test_truncated_file_is_refused(tmp_path: Path, keep_bytes: int) -> None:
    path = save_checkpoint(tmp_path, 1, _payload(), keep=0)
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("where", ["magic", "digest", "payload_start", "payload_middle", "last"])
def test_flipped_byte_is_refused(tmp_path: Path, where: str) -> None:
    path = save_checkpoint(tmp_path, 1, _payload(), keep=0)
    data = bytearray(path.read_bytes())
    header = len(MAGIC) + 32
    offset = {
        "magic": 3,
        "digest": len(MAGIC) + 5,
        "payload_start": header,
        "payload_middle": (header + len(data)) // 2,
        "last": len(data) - 1,
    }[where]
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_latest_falls_back_to_previous_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"x": step}, keep=0)
    bad = checkpoint_path(tmp_path, 3)
    truncated = bad.read_bytes()[:-10]
    bad.write_bytes(truncated)
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        path, payload = load_latest_checkpoint(tmp_path)
    assert path == checkpoint_path(tmp_path, 2) and payload["x"] == 2
    assert bad.read_bytes() == truncated  # kept for inspection
    assert str(bad) in caplog.text

    two = checkpoint_path(tmp_path, 2)
    two.write_bytes(b"garbage")
    assert load_latest_checkpoint(tmp_path)[1]["x"] == 1
    checkpoint_path(tmp_path, 1).write_bytes(b"")
    assert load_latest_checkpoint(tmp_path) is None
    assert len(list_checkpoints(tmp_path)) == 3


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _WritesFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _malicious_bytes(kind: str, marker: Path) -> bytes:
    evil = _RunsShell(marker) if "shell" in kind else _WritesFile(marker)
    payload = {"format_version": ckpt.FORMAT_VERSION, "step": 1, "model": evil}
    if kind.startswith("torch"):
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()
    return pickle.dumps(payload, protocol=2)  # the legacy format torch.load still reads


@pytest.mark.parametrize("kind", ["torch_shell", "torch_file", "pickle_shell", "pickle_file"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    data = _malicious_bytes(kind, marker)
    # Control: the payload really runs code when unpickled without weights_only.
    if kind.startswith("torch"):
        torch.load(io.BytesIO(data), weights_only=False)
    else:
        pickle.loads(data)
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "ckpt-00000001.pt"
    path.write_bytes(_wrap(data))
    with pytest.raises(CheckpointError, match="refusing checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    assert load_latest_checkpoint(tmp_path) is None
    assert not marker.exists()


def test_wrong_format_version_is_refused(tmp_path: Path) -> None:
    for content, version in (({"format_version": 99}, "99"), (torch.zeros(2), "?")):
        buffer = io.BytesIO()
        torch.save(content, buffer)
        path = tmp_path / "ckpt-00000001.pt"
        path.write_bytes(_wrap(buffer.getvalue()))
        with pytest.raises(CheckpointError, match=f"format version {version}") as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "ckpt-00000001.pt"
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_keeps_older_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    save_checkpoint(tmp_path, 1, {"x": 1}, keep=2)
    save_checkpoint(tmp_path, 2, {"x": 2}, keep=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(ckpt.os, failing, _disk_full)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, 3, {"x": 3}, keep=2)
    monkeypatch.undo()
    message = str(info.value)
    assert str(checkpoint_path(tmp_path, 3)) in message
    assert "No space left on device" in message
    assert isinstance(info.value.__cause__, OSError)
    # Nothing changed on disk: no new file, no temp file, older checkpoints intact.
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert load_latest_checkpoint(tmp_path)[1]["x"] == 2


def test_directory_that_cannot_be_made_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="could not save checkpoint"):
        save_checkpoint(blocker / "ckpts", 1, {}, keep=1)


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess

    from seqlab.train.checkpoint import remove_stale_temporaries

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".ckpt-00000010.pt.tmp-{dead.pid}"
    live = tmp_path / f".ckpt-00000020.pt.tmp-{os.getpid()}"
    other = tmp_path / "notes.txt"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
