"""The trainer: optimizes a task, checkpoints, and evaluates and decodes at intervals.

Killed at any moment and restarted with the same command, it resumes from the newest good
checkpoint, including the position in the data stream and every random generator.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seqlab.train.checkpoint import (
    load_latest_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from seqlab.train.decode_runner import decode_dataset, write_decode_outputs
from seqlab.train.evaler import evaluate
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.optim import LearningRateSchedule
from seqlab.train.run_context import RunContext, build_context, write_config_files
from seqlab.train.summaries import Summaries

log = logging.getLogger(__name__)


def autocast(mixed_precision: str) -> contextlib.AbstractContextManager:
    """CPU autocast for ``mixed_precision`` ("none" or "bfloat16")."""
    if mixed_precision == "none":
        return contextlib.nullcontext()
    if mixed_precision == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    raise ValueError(f"trainer.mixed_precision {mixed_precision!r}; expected none or bfloat16")


class TrainingDivergedError(RuntimeError):
    """A NaN or infinite loss or gradient; the message names the step and the culprits."""


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))


class Trainer:
    """Runs the training loop of one experiment in one logdir."""

    def __init__(self, config: ExperimentConfig, logdir: Path, show_progress: bool = True) -> None:
        self.config = config
        self.logdir = logdir
        self.show_progress = show_progress
        write_config_files(config, logdir)
        self.context: RunContext = build_context(config, logdir, train_tokenizer=True)
        self.task = self.context.task
        self.data = self.context.data
        self.examples = self.data.examples("train")
        self.stream = self.data.train_stream(self.examples, config.seed)
        tc = config.trainer
        self.schedule = LearningRateSchedule(tc.schedule, default_total_steps=tc.max_steps)
        self.params = [p for p in self.task.parameters() if p.requires_grad]
        self.optimizer = tc.optimizer.build(self.params, lr=self.schedule(1))
        self.summaries = Summaries(logdir)
        self.step = 0
        self.skipped_steps = 0
        self._saved_step: int | None = None
        self._stop_requested = False

    # ---- checkpoints ------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_stream": self.stream.state_dict(),
            "rng": rng_state(),
            "skipped_steps": self.skipped_steps,
        }

    def save(self) -> Path:
        tc = self.config.trainer
        path = save_checkpoint(
            self.context.checkpoint_dir, self.step, self._payload(), tc.keep_checkpoints
        )
        self._saved_step = self.step
        return path

    def restore(self) -> bool:
        """Restores the newest good checkpoint, if any; returns whether one was found."""
        for path in remove_stale_temporaries(self.context.checkpoint_dir):
            tqdm.write(f"[seqlab] removed {path}, left half-written by an interrupted save")
        found = load_latest_checkpoint(self.context.checkpoint_dir)
        if found is None:
            return False
        path, payload = found
        self.task.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.stream.load_state_dict(payload["data_stream"])
        set_rng_state(payload["rng"])
        self.step = int(payload["step"])
        self._saved_step = self.step
        self.skipped_steps = int(payload.get("skipped_steps", 0))
        log.info("resumed from %s (step %d)", path, self.step)
        tqdm.write(f"[seqlab] resumed from {path} at step {self.step}")
        return True

    # ---- one update ---------------------------------------------------------------------------
    def _check_finite(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> str | None:
        """None if finite; otherwise a description of what is not."""
        if not torch.isfinite(loss):
            return f"loss is {loss.item()}"
        if grad_norm is not None and not torch.isfinite(grad_norm):
            bad = [
                name
                for name, p in self.task.named_parameters()
                if p.grad is not None and not torch.isfinite(p.grad).all()
            ]
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            return f"gradient norm is {grad_norm.item()} (non-finite gradients in: {shown})"
        return None

    def train_step(self, indices: list[int]) -> dict[str, float]:
        """One optimizer update on the examples ``indices``; returns its metrics."""
        tc = self.config.trainer
        batch = self.data.collate(self.examples, indices)
        lr = self.schedule(self.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.task.train()
        with autocast(tc.mixed_precision):
            predictions = self.task.compute_predictions(batch)
            loss, metrics = self.task.compute_loss(batch, predictions)
        problem = self._check_finite(loss, None)
        grad_norm = None
        if problem is None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.params if p.grad is not None]
            )
            # Checked before clipping: scaling by max_norm / inf would turn every gradient
            # into 0 or NaN and hide which parameters were at fault.
            problem = self._check_finite(loss, grad_norm)
            if problem is None and tc.clip_gradient_norm > 0:
                torch.nn.utils.clip_grads_with_norm_(self.params, tc.clip_gradient_norm, grad_norm)
        if problem is not None:
            if tc.nan_policy == "skip":
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
                tqdm.write(f"[seqlab] step {self.step + 1}: {problem}; step skipped")
            else:
                raise TrainingDivergedError(
                    f"step {self.step + 1}: {problem} "
                    f"(set trainer.nan_policy=skip to skip such steps)"
                )
        else:
            self.optimizer.step()
        self.step += 1
        out = {name: value for name, (value, _) in metrics.items()}
        out.update(
            learning_rate=lr,
            grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
            tokens=float(batch.src_paddings.numel() - batch.src_paddings.sum())
            + float(batch.tgt_paddings.numel() - batch.tgt_paddings.sum()),
            skipped_steps=float(self.skipped_steps),
        )
        return out

    # ---- eval and decode ----------------------------------------------------------------------
    def run_evals(self) -> None:
        for dataset in self.config.trainer.eval_datasets:
            metrics = evaluate(self.context, dataset, show_progress=self.show_progress)
            self.summaries.scalars(f"eval_{dataset}", self.step, metrics)
            tqdm.write(f"[seqlab] step {self.step} eval {dataset}: " + _fmt(metrics))

    def run_decodes(self) -> None:
        tc = self.config.trainer
        for dataset in tc.decode_datasets:
            results, metrics = decode_dataset(
                self.context, dataset, limit=tc.decode_limit, show_progress=self.show_progress
            )
            job = f"decode_{dataset}"
            write_decode_outputs(self.logdir / job, self.step, results, metrics)
            self.summaries.scalars(job, self.step, metrics)
            alignment = getattr(self.task, "alignment", None)
            if alignment is not None:
                examples = self.data.examples(dataset)
                probs = alignment(self.data.collate(examples, [0]))
                self.summaries.alignment(job, self.step, probs)
            tqdm.write(f"[seqlab] step {self.step} decode {dataset}: " + _fmt(metrics))

    # ---- the loop ---------------------------------------------------------------------------
    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = True
        tqdm.write(f"[seqlab] signal {signum}: saving a checkpoint after this step, then exiting")

    def train(self) -> int:
        """Trains to ``max_steps``; returns the final step."""
        tc = self.config.trainer
        self.restore()
        previous = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)
        }
        last_save = time.time()
        window_tokens, window_start = 0.0, time.time()
        bar = tqdm(
            total=tc.max_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.show_progress,
            dynamic_ncols=True,
        )
        try:
            while self.step < tc.max_steps and not self._stop_requested:
                metrics = self.train_step(next(self.stream))
                window_tokens += metrics["tokens"]
                bar.update(1)
                if self.step % tc.log_every_steps == 0 or self.step == tc.max_steps:
                    elapsed = max(time.time() - window_start, 1e-9)
                    metrics["tokens_per_second"] = window_tokens / elapsed
                    metrics["steps_per_second"] = tc.log_every_steps / elapsed
                    metrics["epoch"] = float(self.stream.epoch)
                    self.summaries.scalars("train", self.step, metrics)
                    bar.set_postfix(
                        loss=f"{metrics['loss']:.3f}",
                        lr=f"{metrics['learning_rate']:.2e}",
                        tok_s=f"{metrics['tokens_per_second']:.0f}",
                        epoch=self.stream.epoch,
                    )
                    window_tokens, window_start = 0.0, time.time()
                due_steps = (
                    tc.checkpoint_every_steps > 0 and self.step % tc.checkpoint_every_steps == 0
                )
                due_time = time.time() - last_save >= tc.checkpoint_every_seconds
                if due_steps or due_time:
                    self.save()
                    last_save = time.time()
                if tc.eval_every_steps > 0 and self.step % tc.eval_every_steps == 0:
                    self.run_evals()
                if tc.decode_every_steps > 0 and self.step % tc.decode_every_steps == 0:
                    self.run_decodes()
            if self._saved_step != self.step:
                self.save()
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.summaries.close()
        return self.step


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )
