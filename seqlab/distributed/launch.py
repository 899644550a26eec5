"""``seqlab train --nproc N``: the same command under torchrun, on this machine."""

from __future__ import annotations

import os
import sys


class LaunchError(ValueError):
    """A ``--nproc`` that cannot be run; the message says why."""


def torchrun_command(
    nproc: int, program: list[str], launcher: str = "torch.distributed.run"
) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N PROGRAM``, where
    ``program`` is e.g. ``["-m", "seqlab", "train", ...]`` or ``["script.py", ...]``;
    ``launcher`` is the module that runs torchrun."""
    return [
        sys.executable,
        "-m",
        launcher,
        "--standalone",
        f"--nproc_per_node={nproc}",
        *program,
    ]


def exec_torchrun(nproc: int, seqlab_args: list[str]) -> None:
    """Replaces this process by torchrun running ``seqlab ARGS`` in ``nproc`` processes.

    An exec rather than a child process, so that Ctrl-C and SIGTERM reach torchrun, which
    forwards them to the workers, and its exit status is the command's.
    """
    if nproc < 1:
        raise LaunchError(f"--nproc must be >= 1, got {nproc}")
    if os.environ.get("WORLD_SIZE"):
        raise LaunchError("--nproc given inside a torchrun job (WORLD_SIZE is set); drop --nproc")
    # A worker's one-line error is the job's whole report (seqlab.distributed.torchrun).
    command = torchrun_command(nproc, ["-m", "seqlab", *seqlab_args], "seqlab.distributed.torchrun")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
