"""Whether a run's training has finished: ``<logdir>/training_finished.json``.

The trainer writes it after the final checkpoint when training ends for good (``max_steps``
reached, ``trainer.max_train_seconds`` spent, or ``trainer.early_stop``), never when it is
stopped by a signal or an error, and removes it when a run starts or resumes training.
``seqlab eval|decode --follow`` exits once it is there and every checkpoint is processed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqlab.core.atomic_files import write_atomic

FINISHED_FILE = "training_finished.json"


def mark_finished(logdir: Path, step: int, reason: str) -> None:
    """Records that training ended at ``step`` (its final checkpoint is written) and why."""
    text = json.dumps({"step": step, "reason": reason}, indent=1) + "\n"
    write_atomic(logdir / FINISHED_FILE, text.encode())


def clear_finished(logdir: Path) -> None:
    """Training starts or resumes: followers wait for new checkpoints again."""
    (logdir / FINISHED_FILE).unlink(missing_ok=True)


def read_finished(logdir: Path) -> dict[str, Any] | None:
    """{"step": ..., "reason": ...} of a finished run, or None while training may go on."""
    try:
        return json.loads((logdir / FINISHED_FILE).read_text())
    except (OSError, ValueError):
        return None
