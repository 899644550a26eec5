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

from seqlab.quant.qat import set_quantization_step
from seqlab.train.checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    list_checkpoints,
    load_latest_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from seqlab.train.checkpoint_fit import load_model_state
from seqlab.train.decode_runner import decode_dataset, write_decode_outputs
from seqlab.train.ema import EMA_CHECKPOINT_KEY, EMA_JOB_SUFFIX
from seqlab.train.evaler import evaluate
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.optim import LearningRateSchedule
from seqlab.train.run_context import (
    TOKENIZER_FILE,
    RunContext,
    build_context,
    write_config_files,
)
from seqlab.train.summaries import Summaries
from seqlab.train.warm_start import warm_start
from seqlab.train.weight_noise import WEIGHT_NOISE_CHECKPOINT_KEY

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

    # Only one process of a multi-process run writes config files, summaries and progress.
    is_main_process: bool = True

    def __init__(self, config: ExperimentConfig, logdir: Path, show_progress: bool = True) -> None:
        self.config = config
        self.logdir = logdir
        self.show_progress = show_progress
        self.context: RunContext = build_context(config, logdir, train_tokenizer=True)
        if self.is_main_process and not list_checkpoints(self.context.checkpoint_dir):
            # A resuming run rewrites them in train(), once its checkpoint is known to fit.
            write_config_files(config, logdir)
        self.task = self.context.task
        self.data = self.context.data
        self.examples = self.data.examples("train")
        self.stream = self.data.train_stream(self.examples, config.seed)
        tc = config.trainer
        self.schedule = LearningRateSchedule(tc.schedule, default_total_steps=tc.max_steps)
        self._build_optimizer()
        self.summaries = Summaries(logdir)
        self.step = 0
        self.skipped_steps = 0
        # Wall seconds of training steps and their input so far, over all resumes.
        self.train_seconds = 0.0
        self._saved_step: int | None = None
        self._stop_requested = False
        # Seconds spent getting batches (next indices, collating) since the last log line.
        self.data_wait_seconds = 0.0

    def _build_optimizer(self) -> None:
        """Sets ``params`` and ``optimizer`` over the task's trainable parameters (again after
        wrapping, which may replace them)."""
        tc = self.config.trainer
        named_params = [(n, p) for n, p in self.task.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named_params]
        self.optimizer = tc.optimizer.build(self.params, lr=self.schedule(1))
        self.ema = tc.ema.build(named_params)
        self.weight_noise = tc.weight_noise.build(self.params, seed=self.config.seed)
        if tc.use_ema_for_eval and not self.ema.enabled:
            raise ValueError("trainer.use_ema_for_eval needs trainer.ema.decay > 0")

    # ---- checkpoints ------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        payload = {
            "config": self.config.to_dict(),
            "model": self.task.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_stream": self.stream.state_dict(),
            "rng": rng_state(),
            "skipped_steps": self.skipped_steps,
            "train_seconds": self.train_seconds,
        }
        if self.ema.enabled:
            payload[EMA_CHECKPOINT_KEY] = self.ema.state_dict()
        if self.config.trainer.weight_noise.std > 0:
            payload[WEIGHT_NOISE_CHECKPOINT_KEY] = self.weight_noise.state_dict()
        return payload

    def save(self) -> Path:
        tc = self.config.trainer
        try:
            path = save_checkpoint(
                self.context.checkpoint_dir, self.step, self._payload(), tc.keep_checkpoints
            )
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}; training stops at step {self.step}: make room and run the same command "
                f"to resume from the newest of them"
            ) from e.__cause__
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
        try:
            load_model_state(self.task, payload.get("model"), path, payload.get("config"))
        except IncompatibleCheckpointError as e:
            # Older checkpoints are not tried: they come from the same run as this one.
            raise IncompatibleCheckpointError(
                f"{e}. Older checkpoints are not tried (they come from the same run): train "
                f"this config in a new --logdir, or resume with the config of "
                f"{self.logdir / 'config.txt'} (the logdir's checkpoints and config files are "
                f"left as they were)"
            ) from None
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
        except (ValueError, KeyError) as e:
            raise IncompatibleCheckpointError(
                f"checkpoint {path}: its optimizer state does not fit trainer.optimizer ({e})"
            ) from None
        self.stream.load_state_dict(payload["data_stream"])
        set_rng_state(payload["rng"])
        self._restore_average_and_noise(payload, path)
        self.step = int(payload["step"])
        self._saved_step = self.step
        self.skipped_steps = int(payload.get("skipped_steps", 0))
        self.train_seconds = float(payload.get("train_seconds", 0.0))
        log.info("resumed from %s (step %d)", path, self.step)
        tqdm.write(f"[seqlab] resumed from {path} at step {self.step}")
        return True

    def _restore_average_and_noise(self, payload: dict[str, Any], path: Path) -> None:
        """Restores the weights' moving average and the weight-noise generator (after the
        weights themselves)."""
        if self.ema.enabled and EMA_CHECKPOINT_KEY in payload:
            self.ema.load_state_dict(payload[EMA_CHECKPOINT_KEY])
        elif self.ema.enabled:
            self.ema.reset()
            tqdm.write(f"[seqlab] {path} has no moving average; it starts from its weights")
        if WEIGHT_NOISE_CHECKPOINT_KEY in payload:
            self.weight_noise.load_state_dict(payload[WEIGHT_NOISE_CHECKPOINT_KEY])

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

    def _collate(self, indices: list[int]) -> Any:
        """The batch of ``indices``; the time it takes counts as waiting for data."""
        start = time.perf_counter()
        batch = self.data.collate(self.examples, indices)
        self.data_wait_seconds += time.perf_counter() - start
        return batch

    def train_step(self, indices: list[int]) -> dict[str, float]:
        """One optimizer update on the examples ``indices``; returns its metrics."""
        tc = self.config.trainer
        batch = self._collate(indices)
        lr = self.schedule(self.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.task.train()
        with self.weight_noise.applied(self.step):
            with autocast(tc.mixed_precision):
                predictions = self.task.compute_predictions(batch)
                loss, metrics = self.task.compute_loss(batch, predictions)
            problem = self._check_finite(loss, None)
            grad_norm = None
            if problem is None:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                problem, grad_norm = self._clip_gradients(loss)
        self._apply_update(problem)
        self.step += 1
        set_quantization_step(self.task, self.step)
        out = {name: value for name, (value, _) in metrics.items()}
        out.update(
            learning_rate=lr,
            grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
            # A batch may count its own tokens (speech: 10 ms frames plus transcript tokens).
            tokens=float(batch.num_tokens)
            if "num_tokens" in batch
            else float(batch.src_paddings.numel() - batch.src_paddings.sum())
            + float(batch.tgt_paddings.numel() - batch.tgt_paddings.sum()),
            skipped_steps=float(self.skipped_steps),
            # Broken input lines the data reader skipped (speech manifests), 0 if none.
            skipped_examples=float(getattr(self.examples, "num_skipped", 0)),
        )
        return out

    def _gradient_norm(self) -> torch.Tensor:
        """The L2 norm of all gradients together."""
        return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])

    def _clip_gradients(self, loss: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        """Clips the gradients to ``clip_gradient_norm``; returns (problem, norm before)."""
        tc = self.config.trainer
        grad_norm = self._gradient_norm()
        # Checked before clipping: scaling by max_norm / inf would turn every gradient
        # into 0 or NaN and hide which parameters were at fault.
        problem = self._check_finite(loss, grad_norm)
        if problem is None and tc.clip_gradient_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, tc.clip_gradient_norm, grad_norm)
        return problem, grad_norm

    def _apply_update(self, problem: str | None) -> None:
        """Steps the optimizer, or handles ``problem`` by trainer.nan_policy."""
        tc = self.config.trainer
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
        self.ema.update(self.step + 1)

    # ---- eval and decode ----------------------------------------------------------------------
    def _eval_weights(self) -> tuple[contextlib.AbstractContextManager, str]:
        """(context in which the task holds the weights to evaluate, job-name suffix)."""
        if self.config.trainer.use_ema_for_eval:
            return self.ema.swapped_in(), EMA_JOB_SUFFIX
        return contextlib.nullcontext(), ""

    def run_evals(self) -> None:
        weights, suffix = self._eval_weights()
        with weights:
            for dataset in self.config.trainer.eval_datasets:
                metrics = evaluate(self.context, dataset, show_progress=self.show_progress)
                self.summaries.scalars(f"eval_{dataset}{suffix}", self.step, metrics)
                tqdm.write(f"[seqlab] step {self.step} eval {dataset}{suffix}: " + _fmt(metrics))

    def run_decodes(self) -> None:
        tc = self.config.trainer
        weights, suffix = self._eval_weights()
        with weights:
            for dataset in tc.decode_datasets:
                results, metrics = decode_dataset(
                    self.context, dataset, limit=tc.decode_limit, show_progress=self.show_progress
                )
                job = f"decode_{dataset}{suffix}"
                write_decode_outputs(self.logdir / job, self.step, results, metrics)
                self.summaries.scalars(job, self.step, metrics)
                alignment = getattr(self.task, "alignment", None)
                if alignment is not None:
                    examples = self.data.examples(dataset)
                    probs = alignment(self.data.collate(examples, [0]))
                    self.summaries.alignment(job, self.step, probs)
                tqdm.write(f"[seqlab] step {self.step} decode {dataset}{suffix}: " + _fmt(metrics))

    # ---- the loop ---------------------------------------------------------------------------
    def _agree_on_saving(self, due_by_time: bool) -> bool:
        """Whether to save now by the clock; several processes must all agree (and on a stop)."""
        return due_by_time

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = True
        tqdm.write(f"[seqlab] signal {signum}: saving a checkpoint after this step, then exiting")

    def train(self) -> int:
        """Trains to ``max_steps``; returns the final step."""
        tc = self.config.trainer
        if not self.restore() and tc.init_from_checkpoint:
            summary = warm_start(self.task, tc.init_from_checkpoint, self.logdir / TOKENIZER_FILE)
            if self.ema.enabled:
                self.ema.reset()
            if self.is_main_process:
                tqdm.write(f"[seqlab] {summary}")
        if self.is_main_process:
            write_config_files(self.config, self.logdir)
        previous = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)
        }
        last_save = time.time()
        window_tokens, window_start = 0.0, time.time()
        self.data_wait_seconds = 0.0
        if 0 < tc.max_train_seconds <= self.train_seconds:
            tqdm.write(f"[seqlab] trainer.max_train_seconds already spent at step {self.step}")
            self._stop_requested = True
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
                fetch_start = time.perf_counter()
                indices = next(self.stream)
                self.data_wait_seconds += time.perf_counter() - fetch_start
                metrics = self.train_step(indices)
                self.train_seconds += time.perf_counter() - fetch_start
                if 0 < tc.max_train_seconds <= self.train_seconds and not self._stop_requested:
                    self._stop_requested = True
                    tqdm.write(
                        f"[seqlab] trained for {self.train_seconds:.0f} s "
                        f"(trainer.max_train_seconds={tc.max_train_seconds:g}): stopping at "
                        f"step {self.step}"
                    )
                window_tokens += metrics["tokens"]
                bar.update(1)
                if self.step % tc.log_every_steps == 0 or self.step == tc.max_steps:
                    elapsed = max(time.time() - window_start, 1e-9)
                    metrics["tokens_per_second"] = window_tokens / elapsed
                    metrics["steps_per_second"] = tc.log_every_steps / elapsed
                    metrics["epoch"] = float(self.stream.epoch)
                    # The input pipeline must never be the bottleneck (docs/benchmarks.md).
                    metrics["data_wait_seconds"] = self.data_wait_seconds
                    metrics["data_wait_fraction"] = min(self.data_wait_seconds / elapsed, 1.0)
                    metrics["train_seconds"] = self.train_seconds
                    self.summaries.scalars("train", self.step, metrics)
                    bar.set_postfix(
                        loss=f"{metrics['loss']:.3f}",
                        lr=f"{metrics['learning_rate']:.2e}",
                        tok_s=f"{metrics['tokens_per_second']:.0f}",
                        data_wait=f"{metrics['data_wait_fraction']:.1%}",
                        epoch=self.stream.epoch,
                    )
                    window_tokens, window_start = 0.0, time.time()
                    self.data_wait_seconds = 0.0
                due_steps = (
                    tc.checkpoint_every_steps > 0 and self.step % tc.checkpoint_every_steps == 0
                )
                due_time = self._agree_on_saving(
                    time.time() - last_save >= tc.checkpoint_every_seconds
                )
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
