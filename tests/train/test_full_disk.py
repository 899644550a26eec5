"""A real full disk: checkpoints saved to a small tmpfs until a write fails with ENOSPC.

The failing save reports "No space left on device" naming the checkpoint, leaves the older
checkpoints, the latest pointer and the directory exactly as they were (no temporary), and
training stops with exit code 1; once there is room, the same command resumes.
Mounting needs root; elsewhere these tests skip (the simulated-ENOSPC tests in
test_checkpoint.py still run).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from seqlab.cli import main
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
    encode_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)

PAGE = 4096


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs at a fresh directory, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = _mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def used_bytes(mount_point: Path) -> int:
    stat = os.statvfs(mount_point)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def resize(mount_point: Path, size: int) -> None:
    """Sets the tmpfs size in bytes (a whole number of pages)."""
    result = _mount("-o", f"remount,size={size}", str(mount_point))
    assert result.returncode == 0, result.stderr
    assert os.statvfs(mount_point).f_blocks * os.statvfs(mount_point).f_frsize == size


def leave_free(mount_point: Path, pages: int) -> None:
    resize(mount_point, used_bytes(mount_point) + pages * PAGE)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def payload(step: int) -> dict:
    torch.manual_seed(step)
    return {"model": {"weight": torch.randn(64, 256)}}  # 64 KiB, 17 pages with the header


@pytest.mark.parametrize(
    ("free_pages", "what_fails"), [(-1, "checkpoint"), (0, "latest pointer"), (1, "nothing")]
)
def test_save_on_a_full_disk_keeps_everything_as_it_was(
    small_disk: Path, free_pages: int, what_fails: str
) -> None:
    directory = small_disk / "checkpoints"
    for step in (1, 2):
        save_checkpoint(directory, step, payload(step), keep=0)
    before = snapshot(directory)
    encoded = encode_checkpoint({"format_version": FORMAT_VERSION, "step": 3, **payload(3)})
    checkpoint_pages = -(-len(encoded) // PAGE)
    # Room for the new checkpoint file plus free_pages: -1 fails writing the checkpoint, 0
    # fails writing the latest pointer after it (1 page), 1 leaves room for both.
    leave_free(small_disk, checkpoint_pages + free_pages)
    if what_fails == "nothing":
        save_checkpoint(directory, 3, payload(3), keep=0)
        assert load_latest_checkpoint(directory)[0] == checkpoint_path(directory, 3)
        assert (directory / "latest").read_text() == "ckpt-00000003.pt\n"
        return
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(directory, 3, payload(3), keep=0)
    assert str(info.value) == (
        f"could not save checkpoint {checkpoint_path(directory, 3)} (No space left on device); "
        f"the previous checkpoints in {directory} are kept"
    )
    assert snapshot(directory) == before  # no new file, no temporary, latest pointer unchanged
    path, loaded = load_latest_checkpoint(directory)
    assert path == checkpoint_path(directory, 2)
    assert torch.equal(loaded["model"]["weight"], payload(2)["model"]["weight"])


def test_overwriting_an_unreadable_checkpoint_keeps_it_even_when_the_disk_fills(
    small_disk: Path,
) -> None:
    directory = small_disk / "checkpoints"
    save_checkpoint(directory, 2, payload(2), keep=0)
    unreadable = checkpoint_path(directory, 3)
    unreadable.write_bytes(b"left by a crash, or by someone else")
    before = snapshot(directory)
    encoded = encode_checkpoint({"format_version": FORMAT_VERSION, "step": 3, **payload(3)})
    leave_free(small_disk, -(-len(encoded) // PAGE))  # the latest pointer does not fit
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(directory, 3, payload(3), keep=0)
    assert snapshot(directory) == before
    resize(small_disk, 16 * 2**20)
    save_checkpoint(directory, 3, payload(3), keep=0)
    kept = directory / "ckpt-00000003.pt.replaced-1"
    assert kept.read_bytes() == before[unreadable.name]
    assert load_checkpoint(unreadable)["step"] == 3
    assert [step for step, _ in list_checkpoints(directory)] == [2, 3]


pytestmark_bible = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def train(logdir: Path, cache_dir: Path, max_steps: int) -> tuple[int, str]:
    sets = [
        f"data.cache_dir={cache_dir}",
        "data.train_limit=200",
        "data.eval_limit=4",
        f"trainer.max_steps={max_steps}",
        "trainer.checkpoint_every_steps=1",
        "trainer.keep_checkpoints=0",
        "trainer.log_every_steps=100",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
    ]
    args = ["train", "--experiment", "mt.bible_en_es.transformer_tiny", "--logdir", str(logdir)]
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        code = main(args + [a for s in sets for a in ("--set", s)])
    return code, out.getvalue()


@pytestmark_bible
def test_training_stops_cleanly_on_a_full_disk_and_resumes_once_there_is_room(
    small_disk: Path, bible_cache_dir: Path
) -> None:
    logdir = small_disk / "log"
    directory = logdir / "checkpoints"
    code, out = train(logdir, bible_cache_dir, max_steps=2)
    assert code == 0, out
    before = snapshot(directory)
    assert sorted(before) == ["ckpt-00000001.pt", "ckpt-00000002.pt", "latest"]
    # Half a checkpoint of room: step 3 trains, and its checkpoint does not fit.
    leave_free(small_disk, len(before["ckpt-00000002.pt"]) // 2 // PAGE)

    code, out = train(logdir, bible_cache_dir, max_steps=4)
    assert code == 1, out
    errors = [line for line in out.splitlines() if line.startswith("seqlab train: error: ")]
    assert errors == [
        f"seqlab train: error: could not save checkpoint {checkpoint_path(directory, 3)} "
        f"(No space left on device); the previous checkpoints in {directory} are kept; "
        "training stops at step 3: make room and run the same command to resume from the "
        "newest of them"
    ], out
    assert "Traceback" not in out
    assert snapshot(directory) == before
    assert [load_checkpoint(p)["step"] for _, p in list_checkpoints(directory)] == [1, 2]

    resize(small_disk, 16 * 2**20)
    code, out = train(logdir, bible_cache_dir, max_steps=4)
    assert code == 0, out
    assert f"resumed from {checkpoint_path(directory, 2)} at step 2" in out
    assert [step for step, _ in list_checkpoints(directory)] == [1, 2, 3, 4]
    assert all(before[name] == (directory / name).read_bytes() for name in before if "ckpt" in name)
