"""Fixtures of the distributed tests: running a job (e.g. torchrun) as a subprocess."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

import pytest

from seqlab.distributed.launch import torchrun_command

Job = Callable[..., tuple[subprocess.CompletedProcess, float]]


def run_job(command: list[str], timeout: float = 240) -> tuple[subprocess.CompletedProcess, float]:
    """Runs ``command`` with one OpenMP thread per process; returns its result and seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    return result, time.monotonic() - started


@pytest.fixture(scope="session")
def job() -> Job:
    return run_job


@pytest.fixture(scope="session")
def torchrun() -> Callable[..., list[str]]:
    """(nproc, script, *args) -> the torchrun command running ``python script args``."""
    return lambda nproc, script, *args: torchrun_command(nproc, [script, *args])
