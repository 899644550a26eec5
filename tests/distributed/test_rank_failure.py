"""An exception on one rank ends a torchrun job promptly, with that rank's message, while
the other rank waits in a collective (no hang until the process group's timeout)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def test_an_error_on_rank_1_ends_the_job_promptly_with_its_message(
    job: Callable[..., Any], torchrun: Callable[..., list[str]]
) -> None:
    worker = Path(__file__).with_name("rank_failure_worker.py")
    result, seconds = job(torchrun(2, str(worker), "collective"), timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "rank 1 failed on purpose at step 3" in output
    assert "rank      : 1" in output, output[-2000:]  # torchrun's report names the failed rank
    assert seconds < 60, f"took {seconds:.0f}s; the process group's timeout is 600 s"
