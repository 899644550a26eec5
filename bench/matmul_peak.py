"""The fp32 matrix-multiply peak of this machine, and the FLOPs a training step does.

``fraction of peak = counted FLOPs per step / step time / measured peak``: how much of what
the CPU's fp32 matrix multiply can do a training step uses. The peak is measured in the same
process, with the same thread count, right before the steps it is compared with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def measure_matmul_peak(
    size: int = 2048,
    reps: int = 8,
    seconds: float = 3.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The best fp32 GFLOP/s of ``[size, size] @ [size, size]`` over ``reps`` multiplies.

    The best, not the median, because a peak is what the hardware can do; background load
    only lowers it. Stops after ``seconds`` once at least three multiplies ran. ``clock``
    should be the one the steps it is compared with are timed by.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    out = torch.empty(size, size)
    torch.matmul(a, b, out=out)  # warm-up: thread pool, packing buffers
    flops = 2.0 * size**3
    best = float("inf")
    started = time.perf_counter()
    for rep in range(reps):
        start = clock()
        torch.matmul(a, b, out=out)
        best = min(best, clock() - start)
        if rep >= 2 and time.perf_counter() - started > seconds:
            break
    return flops / best / 1e9


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matrix multiplies (and attention) one call of ``fn`` runs, forward and
    backward, as ``torch.utils.flop_counter`` counts them (2 per multiply-add; elementwise ops,
    softmax and the optimizer are not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
