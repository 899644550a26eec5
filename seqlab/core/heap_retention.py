"""Keep freed tensor memory in the process instead of returning it to the OS (glibc).

glibc's ``malloc`` serves blocks above its mmap threshold (at most 32 MiB by default) with
``mmap`` and gives them back with ``munmap`` when they are freed. A training step allocates
and frees the same large activations every step (the [B, T, V] logits alone are 133 MB at
64 x 65 tokens and V = 8000), so each step page-faults that memory in again: on this
project's 2-core VM that was 6-11% of a base-shape Transformer step (docs/benchmarks.md).
With a high mmap threshold and trim threshold the freed blocks stay in the heap and are
reused; the process's resident size stays near its peak instead of falling between steps
(there: 4.49 GB after ten steps, against a peak of 4.36 GB without).

The ``seqlab`` command line applies this at start. Setting any of glibc's own malloc
environment variables (``GLIBC_TUNABLES``, ``MALLOC_MMAP_THRESHOLD_``, ...) leaves malloc as
the user configured it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_RETAINED_BYTES = 1 << 30
_USER_SETTINGS = (
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_TOP_PAD_",
)


def retain_freed_heap_memory() -> bool:
    """Raises glibc's mmap and trim thresholds to 1 GiB; returns whether it did.

    Does nothing (False) on a C library other than glibc, or when the environment already
    sets glibc's malloc options.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _RETAINED_BYTES)
        and libc.mallopt(_M_TRIM_THRESHOLD, _RETAINED_BYTES)
    )
