"""Tests for seqlab.core.heap_retention (each in a fresh process: malloc settings are global)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# Where a 64 MB tensor's memory comes from (glibc's mallinfo2: "hblkhd" bytes are mmapped
# blocks, "arena" bytes the heap) while it lives, and whether the heap keeps it once freed.
_MALLOC_STATS = """
import ctypes, sys, torch
from seqlab.core.heap_retention import retain_freed_heap_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = retain_freed_heap_memory() if sys.argv[1] == "retain" else False
before = libc.mallinfo2()
x = torch.ones(16 << 20)
during = libc.mallinfo2()
del x
after = libc.mallinfo2()
mb = 1 << 20
print(applied, (during.hblkhd - before.hblkhd) // mb, (after.arena - before.arena) // mb)
"""


def _malloc_stats(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int, int]:
    """(applied, MB mmapped for the tensor, MB the heap grew by and kept after freeing it)."""
    out = subprocess.run(
        [sys.executable, "-c", _MALLOC_STATS, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


def test_large_blocks_come_from_the_heap_and_stay_there() -> None:
    assert _malloc_stats("default") == (False, 64, 0)  # mmapped, and unmapped when freed
    applied, mmapped, kept = _malloc_stats("retain")
    assert applied
    assert mmapped == 0
    assert kept >= 64


def test_the_users_own_malloc_settings_are_left_alone() -> None:
    env = {"MALLOC_TRIM_THRESHOLD_": "131072"}
    assert _malloc_stats("retain", env) == (False, 64, 0)
