"""Checkpoint averaging (``seqlab average``): the mean of several checkpoints' weights.

The average of the last few checkpoints of a run often decodes better than any one of them
(fairseq's ``average_checkpoints.py``, OpenNMT's ``average_models``). Floating-point tensors
are summed in float32 and the mean cast back to their dtype; other tensors (integer counters,
masks) come from the newest checkpoint. A moving average of the weights (``ema``) is averaged
the same way when every checkpoint holds one. The result is a checkpoint file in seqlab's
format (config and step of the newest) that ``--checkpoint`` and
``trainer.init_from_checkpoint`` accept; it holds no optimizer state, so it does not resume.
Sharded (``.dcp``) checkpoints are read whole, like single files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqlab.train.checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    list_checkpoints,
    load_checkpoint,
    write_checkpoint_file,
)
from seqlab.train.checkpoint_choice import available_checkpoints, resolve_checkpoint
from seqlab.train.checkpoint_fit import first_mismatch
from seqlab.train.ema import EMA_CHECKPOINT_KEY

# The weight dicts of a payload that are averaged.
_AVERAGED_KEYS = ("model", EMA_CHECKPOINT_KEY)


def choose_steps(directory: Path, last: int = 0, steps: list[int] | None = None) -> list[Path]:
    """The checkpoints to average, oldest first: the newest ``last``, or those of ``steps``.

    Raises:
      CheckpointError: fewer than ``last`` checkpoints, or a step without one; the message
        lists what ``directory`` holds.
    """
    if steps:
        return sorted({resolve_checkpoint(directory, step) for step in steps})
    if last < 1:
        raise CheckpointError(f"--last must be at least 1, got {last}")
    found = list_checkpoints(directory)
    if len(found) < last:
        raise CheckpointError(
            f"--last {last}: only {len(found)} checkpoints; {available_checkpoints(directory)}"
        )
    return [path for _, path in found[-last:]]


def _add(sums: dict[str, torch.Tensor], weights: dict[str, Any]) -> None:
    for name, tensor in weights.items():
        if tensor.is_floating_point():
            value = tensor.to(torch.float32)
            if name in sums:
                sums[name] += value
            else:
                sums[name] = value.clone()


def average_checkpoints(paths: list[Path]) -> dict[str, Any]:
    """The payload of the average of the checkpoints ``paths`` (oldest first), read one at a
    time: the mean weights, the config and step of the newest (the last path), and the steps
    averaged (``averaged_steps``).

    Raises:
      CheckpointError: a checkpoint is unreadable (named), or its weights have other names
        or shapes than the newest's.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    newest = load_checkpoint(paths[-1])
    kinds = [k for k in _AVERAGED_KEYS if isinstance(newest.get(k), dict)]
    if "model" not in kinds:
        raise CheckpointError(f"checkpoint {paths[-1]} holds no model weights")
    sums: dict[str, dict[str, torch.Tensor]] = {k: {} for k in kinds}
    steps = []
    for path in paths:
        payload = newest if path == paths[-1] else load_checkpoint(path)
        steps.append(int(payload.get("step", 0)))
        for kind in list(kinds):
            if not isinstance(payload.get(kind), dict):
                kinds.remove(kind)  # a moving average that only some of them hold: left out
                continue
            problem = first_mismatch(newest[kind], payload[kind])
            if problem is not None:
                problem = problem.replace("this model", "the newest")
                raise IncompatibleCheckpointError(
                    f"cannot average {path} with {paths[-1]}: {problem}"
                )
            _add(sums[kind], payload[kind])
    averaged: dict[str, Any] = {
        "step": int(newest.get("step", 0)),
        "config": newest.get("config"),
        "averaged_steps": steps,
        "train_seconds": newest.get("train_seconds", 0.0),
    }
    for kind in kinds:
        averaged[kind] = {
            name: (sums[kind][name] / len(paths)).to(t.dtype) if name in sums[kind] else t
            for name, t in newest[kind].items()
        }
    return averaged


def write_average(
    directory: Path, last: int = 0, steps: list[int] | None = None, output: Path | None = None
) -> tuple[Path, list[int]]:
    """Averages the newest ``last`` checkpoints of ``directory`` (or those of ``steps``) into
    ``output`` (default ``directory/averaged-<step>-<step>-....pt``, which keep-last rotation
    never deletes); returns (the file, the averaged steps).

    Raises:
      CheckpointError: as :func:`choose_steps` and :func:`average_checkpoints`, or the
        write failed.
    """
    payload = average_checkpoints(choose_steps(directory, last, steps))
    step, averaged_steps = payload.pop("step"), payload["averaged_steps"]
    out = output or directory / ("averaged-" + "-".join(map(str, averaged_steps)) + ".pt")
    return write_checkpoint_file(out, step, payload), averaged_steps
