"""``seqlab export`` and ``seqlab infer --artifact`` follow ``--device`` as the other commands
do: a device this machine lacks is refused in one line before anything is loaded."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from seqlab.cli import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
@pytest.mark.parametrize(
    "command",
    [
        ["export", "--logdir", "run", "--format", "torch", "--out", "artifact"],
        ["infer", "--artifact", "artifact", "--prompt", "hello"],
        ["decode", "--logdir", "run"],  # the line every other command prints
    ],
    ids=["export", "infer", "decode"],
)
def test_device_cuda_without_cuda_is_one_line(command: list[str], tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [
                *(str(tmp_path / a) if a in ("run", "artifact") else a for a in command),
                "--device",
                "cuda",
            ]
        )
    assert code == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"seqlab {command[0]}: error: --device=cuda: ")
    assert "use --device=cpu or auto" in lines[0]
