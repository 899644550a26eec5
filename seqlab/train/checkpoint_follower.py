"""The checkpoints ``seqlab eval`` and ``seqlab decode`` process: one, or every one as it comes.

Without ``follow``: the checkpoint ``--checkpoint`` names, else the newest good one. With
``follow`` (Lingvo's evaler and decoder jobs, beside a trainer): every checkpoint of the run
exactly once, in step order, waiting for the run to start and for new checkpoints, until
training has finished (seqlab.train.run_status) and the last checkpoint is processed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from seqlab.train.checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    list_checkpoints,
    load_checkpoint,
)
from seqlab.train.checkpoint_choice import checkpoint_label, load_chosen_checkpoint
from seqlab.train.checkpoint_fit import load_model_state
from seqlab.train.config_changes import config_for_checkpoints
from seqlab.train.ema import EMA_JOB_SUFFIX, model_state
from seqlab.train.run_context import CONFIG_JSON, RunContext, build_context
from seqlab.train.run_status import read_finished

# process(context with the checkpoint's weights loaded, its step, the job-name suffix)
Process = Callable[[RunContext, int, str], None]


def _say(message: str) -> None:
    print(f"[seqlab] {message}", file=sys.stderr, flush=True)


class CheckpointFollower:
    """Loads checkpoints of one logdir into its task and hands each to ``process``.

    The job-name suffix given to ``process`` is ``_ema`` for the weights' moving average,
    and ``_<file name>`` for a checkpoint that is not one of the run's own ``ckpt-<step>``
    (an averaged one, another run's), so that its results never overwrite a step's.
    """

    def __init__(
        self,
        logdir: Path,
        device: torch.device,
        use_ema: bool | None,
        overrides: Sequence[str] = (),
    ) -> None:
        """``use_ema`` None: as the run's ``trainer.use_ema_for_eval`` says; ``overrides``:
        the command's ``--set``, applied to the run's config (none that changes the model)."""
        self.logdir = logdir
        self.device = device
        self.use_ema = use_ema
        self.overrides = list(overrides)
        self.context: RunContext | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.logdir / "checkpoints"

    def _build(self) -> RunContext:
        if self.context is None:
            config = config_for_checkpoints(self.logdir, self.overrides)
            self.context = build_context(
                config, self.logdir, train_tokenizer=False, device=self.device
            )
            if self.use_ema is None:
                self.use_ema = config.trainer.use_ema_for_eval
        return self.context

    def _process(self, path: Path, payload: dict[str, Any], process: Process) -> None:
        context = self._build()
        weights = model_state(payload, path, bool(self.use_ema))
        load_model_state(context.task, weights, path, payload.get("config"))
        label = checkpoint_label(self.checkpoint_dir, path)
        suffix = (EMA_JOB_SUFFIX if self.use_ema else "") + (f"_{label}" if label else "")
        process(context, int(payload["step"]), suffix)

    def run_once(self, process: Process, checkpoint: str | None = None) -> None:
        """Processes the checkpoint ``checkpoint`` names (a step or a path), or the newest.

        Raises:
          CheckpointError: it is missing, unreadable or of another model (never replaced by
            another checkpoint).
        """
        self._build()
        path, payload = load_chosen_checkpoint(self.checkpoint_dir, checkpoint)
        self._process(path, payload, process)

    def follow(self, process: Process, poll_seconds: float) -> None:
        """Processes every checkpoint once, in step order, as the trainer writes them; returns
        when training has finished and its last checkpoint is processed."""
        done: set[int] = set()
        waiting_to_start = waiting_for_more = False
        while True:
            # Read before listing: the final checkpoint is written before the marker.
            finished = read_finished(self.logdir)
            if self.context is None and not (self.logdir / CONFIG_JSON).exists():
                if not waiting_to_start:
                    _say(f"waiting for training to start in {self.logdir}")
                    waiting_to_start = True
                time.sleep(poll_seconds)
                continue
            for step, path in list_checkpoints(self.checkpoint_dir):
                if step in done:
                    continue
                done.add(step)
                try:
                    payload = load_checkpoint(path)
                except IncompatibleCheckpointError:
                    raise  # a newer format: no other checkpoint of the run will do either
                except CheckpointError as e:
                    why = (
                        f"{path} was deleted (trainer.keep_checkpoints) before it was processed"
                        if not path.exists()
                        else str(e)
                    )
                    _say(f"{why}; skipped")
                    continue
                self._process(path, payload, process)
            if finished is not None:
                return
            if not waiting_for_more:
                _say(f"waiting for new checkpoints in {self.checkpoint_dir}")
                waiting_for_more = True
            time.sleep(poll_seconds)
