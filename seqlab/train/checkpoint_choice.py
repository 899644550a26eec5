"""Which checkpoint a command reads: the one ``--checkpoint PATH|STEP`` names, or the newest.

A step number is looked up among the run's own checkpoints (``ckpt-<step>.pt`` or ``.dcp``);
anything else is a path to a checkpoint file or ``.dcp`` directory, relative to the working
directory or else to the run's checkpoint directory (so ``averaged-100-200-300.pt`` names the
file ``seqlab average`` wrote there).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from seqlab.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
)

# A checkpoint given as a bare step number.
_STEP = re.compile(r"^\d+$")
# Characters kept from a file name when it labels a job directory (eval_dev_<label>/).
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def available_checkpoints(directory: Path) -> str:
    """A clause naming the checkpoints in ``directory``, for error messages."""
    steps = [str(step) for step, _ in list_checkpoints(directory)]
    others = sorted(p.name for p in directory.glob("averaged-*.pt")) if directory.is_dir() else []
    if not steps and not others:
        return f"{directory} holds no checkpoint"
    parts = [f"steps {', '.join(steps)}"] if steps else []
    parts += [", ".join(others)] if others else []
    return f"{directory} holds " + "; ".join(parts)


def resolve_checkpoint(directory: Path, choice: str | int | Path) -> Path:
    """The checkpoint path that ``choice`` (a step number, or a path) names.

    Raises:
      CheckpointError: no checkpoint of that step, or no such file; the message lists the
        checkpoints ``directory`` holds.
    """
    text = str(choice).strip()
    if not isinstance(choice, Path) and _STEP.match(text):
        step = int(text)
        for found, path in list_checkpoints(directory):
            if found == step:
                return path
        raise CheckpointError(
            f"--checkpoint {text}: no checkpoint of step {step}; {available_checkpoints(directory)}"
        )
    path = Path(text).expanduser()
    for candidate in (path, directory / path):
        if text and candidate.exists():
            return candidate
    raise CheckpointError(
        f"--checkpoint {text}: no such checkpoint file; {available_checkpoints(directory)}"
    )


def load_chosen_checkpoint(
    directory: Path, choice: str | int | Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """(path, payload) of the checkpoint ``choice`` names, or (None or "") of the newest one
    in ``directory`` that verifies.

    Raises:
      CheckpointError: the chosen checkpoint is missing, unreadable or corrupt (never
        replaced by another), or ``directory`` holds no usable checkpoint.
    """
    if choice is None or str(choice) == "":
        found = load_latest_checkpoint(directory)
        if found is None:
            logdir = directory.parent
            present = list_checkpoints(directory)
            if present:  # each was named above, with what is wrong with it
                raise CheckpointError(
                    f"none of the {len(present)} checkpoints in {directory} can be read (each "
                    f"is named above, and kept); restore one, or train again in a new --logdir"
                )
            raise CheckpointError(
                f"no checkpoint in {directory}; train first "
                f"(`seqlab train --experiment NAME --logdir {logdir}`)"
            )
        return found
    path = resolve_checkpoint(directory, choice)
    return path, load_checkpoint(path)


def checkpoint_label(directory: Path, path: Path) -> str:
    """The empty string for one of the run's own checkpoints in ``directory``, else a name for
    the file (its stem, e.g. ``averaged-100-200-300``) that keeps its results apart."""
    own = {p.resolve() for _, p in list_checkpoints(directory)}
    if path.resolve() in own:
        return ""
    return _LABEL_UNSAFE.sub("_", path.name.removesuffix(".pt").removesuffix(".dcp"))
