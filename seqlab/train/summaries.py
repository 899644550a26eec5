"""TensorBoard summaries: scalars and attention-alignment images."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter


class Summaries:
    """One TensorBoard event writer per job directory (train, eval_dev, decode_dev, ...)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self._writers: dict[str, SummaryWriter] = {}
        self._purge_step: int | None = None

    def resume_after(self, step: int) -> None:
        """Marks the events that an earlier, crashed run wrote past ``step`` (where this run
        starts: its checkpoint's step, or 0) as replaced: TensorBoard then shows each later
        step once, as this run logs it (``SummaryWriter``'s ``purge_step``). Call before the
        first summary is written."""
        if self._writers:
            raise RuntimeError("resume_after() must come before the first summary is written")
        self._purge_step = step + 1

    def writer(self, job: str) -> SummaryWriter:
        if job not in self._writers:
            self._writers[job] = SummaryWriter(str(self.logdir / job), purge_step=self._purge_step)
        return self._writers[job]

    def scalars(self, job: str, step: int, values: dict[str, float]) -> None:
        w = self.writer(job)
        for name, value in values.items():
            if isinstance(value, int | float):
                w.add_scalar(name, value, step)
        w.flush()

    def alignment(self, job: str, step: int, probs: torch.Tensor, tag: str = "attention") -> None:
        """Adds an image of attention probabilities [T_target, S_source] (rows: target)."""
        image = probs.detach().float().clamp(0, 1)
        image = image / image.amax(dim=1, keepdim=True).clamp_min(1e-9)
        scale = max(1, 256 // max(image.shape))
        image = image.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        self.writer(job).add_image(tag, image[None], step, dataformats="CHW")
        self.writer(job).flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
