"""The trainer: the one training loop, for one process and for every process of a torchrun job.

It optimizes a task on ``trainer.device``, accumulates gradients over
``trainer.grad_accum_steps`` batches, checkpoints, and evaluates and decodes at intervals.
How parameters are replicated across processes is a strategy (seqlab.train.parallelism):
``none`` in one process, DDP, FSDP2 or pipeline stages under torchrun. Every rank runs the
same loop over the same global batch stream and trains on its slice of each global batch;
the loss of each slice is scaled by its share of the global batch's loss weight (e.g. target
tokens), so the averaged gradient equals the one a single process computes on the whole batch.

Killed at any moment and restarted with the same command, it resumes from the newest good
checkpoint, including the position in the data stream and every random generator.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import random
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.quant.qat import set_quantization_step
from seqlab.train.batch_prefetcher import BatchPrefetcher
from seqlab.train.checkpoint import CheckpointError, list_checkpoints, prune_checkpoints
from seqlab.train.config_changes import check_same_model, record_config_history, trained_config
from seqlab.train.decode_runner import decode_dataset, write_decode_outputs
from seqlab.train.device import CPU, resolve_device, use_device
from seqlab.train.ema import EMA_CHECKPOINT_KEY, EMA_JOB_SUFFIX
from seqlab.train.evaler import evaluate, write_eval_metrics
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.experiment_checks import check_experiment
from seqlab.train.gradient_norm import clip_gradients_
from seqlab.train.metrics_accumulator import reduce_metric
from seqlab.train.mixed_precision import autocast, check_mixed_precision, grad_scaler
from seqlab.train.optim import LearningRateSchedule
from seqlab.train.parallelism import Parallelism, build_parallelism, to_cpu
from seqlab.train.run_context import (
    CHECKPOINT_DIR,
    TOKENIZER_FILE,
    RunContext,
    build_context,
    check_training_data,
    training_data_identity,
    write_config_files,
)
from seqlab.train.run_status import clear_finished, mark_finished
from seqlab.train.score_history import ScoreRules
from seqlab.train.summaries import Summaries
from seqlab.train.warm_start import warm_start
from seqlab.train.weight_noise import WEIGHT_NOISE_CHECKPOINT_KEY
from seqlab.train.world import world_from_env

log = logging.getLogger(__name__)

GRAD_SCALER_CHECKPOINT_KEY = "grad_scaler"


class TrainingDivergedError(RuntimeError):
    """A NaN or infinite loss or gradient; the message names the step and the culprits."""


def rng_state(device: torch.device = CPU) -> dict[str, Any]:
    """Every random generator a step draws from (the CUDA one on a CUDA device)."""
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device = CPU) -> None:
    """Restores ``rng_state``'s generators; a CUDA state is used only on a CUDA device."""
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclasses.dataclass
class MicroBatch:
    """This rank's slice of one global batch, collated, with the stream position after it."""

    global_indices: list[int]
    batch: NestedMap
    # Real (unpadded) tokens of this rank's slice; 0 for a rank without examples.
    tokens: float
    has_examples: bool
    stream_state: dict[str, Any]
    epoch: int


def batch_tokens(batch: NestedMap) -> float:
    """Real (unpadded) tokens of a collated batch: its own count (e.g. speech frames plus
    transcript tokens) if it has one, else source plus target tokens."""
    if "num_tokens" in batch:
        return float(batch.num_tokens)
    return float((1.0 - batch.src_paddings).sum() + (1.0 - batch.tgt_paddings).sum())


class _UnwrittenSummaries(Summaries):
    """The summaries of ranks other than 0: every rank computes them, rank 0 writes them."""

    def scalars(self, job: str, step: int, values: dict[str, float]) -> None:
        pass

    def alignment(self, job: str, step: int, probs: torch.Tensor, tag: str = "attention") -> None:
        pass


class Trainer:
    """Runs the training loop of one experiment in one logdir, in this process.

    ``config`` may be any ExperimentConfig, registered or built in Python; ``preset`` (the
    registered config it was derived from) only adds config_diff.txt to the logdir.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        logdir: Path,
        show_progress: bool = True,
        preset: ExperimentConfig | None = None,
    ) -> None:
        tc = config.trainer
        # The config, and settings the machine cannot honour, are refused before any data is
        # prepared.
        world = world_from_env()
        for warning in check_experiment(config, world.world_size):
            if world.is_main:
                log.warning("warning: %s", warning)
        self.device = resolve_device(tc.device, world)
        check_mixed_precision(tc.mixed_precision, self.device)
        use_device(self.device, tc.allow_tf32)
        self.parallel: Parallelism = build_parallelism(tc.distributed, world, self.device)
        # keep_best and early_stop are checked before any data is prepared.
        self.score_rules = ScoreRules(tc, logdir)
        checkpoint_dir = logdir / CHECKPOINT_DIR
        resuming = bool(list_checkpoints(checkpoint_dir))
        trained = trained_config(logdir) if resuming else None
        if trained is not None:  # resuming: refused before any data is prepared
            advice = "set it back to resume this run, or train in a new --logdir"
            check_same_model(trained, config, checkpoint_dir, advice)
        self.world = world
        self.is_main_process = world.is_main
        self.config = config
        self.preset = preset
        self.logdir = logdir
        self.show_progress = show_progress and world.is_main
        # Bars on a terminal; plain periodic lines where output goes to a file (a job log).
        self.show_bars = self.show_progress and sys.stderr.isatty()
        # Rank 0 first prepares the corpus, tokenizer and shards in the shared caches.
        with self.parallel.main_first():
            self.context: RunContext = build_context(
                config, logdir, train_tokenizer=True, device=self.device
            )
            self.examples = self.context.data.examples("train")
        if world.is_main:
            check_training_data(logdir, training_data_identity(self.examples), resuming)
        if world.is_main and not resuming:
            # A resuming run rewrites them in train(), once its checkpoint is known to fit.
            write_config_files(config, logdir, preset)
        if self.parallel.data_parallel_rank:
            # Same initial weights everywhere (seeded above); different dropout per rank of
            # different examples (tensor-parallel ranks share theirs).
            torch.manual_seed(config.seed + self.parallel.data_parallel_rank)
        self.task = self.context.task
        self.data = self.context.data
        self.stream = self.data.train_stream(self.examples, config.seed)
        self.schedule = LearningRateSchedule(tc.schedule, default_total_steps=tc.max_steps)
        self.model = self.parallel.wrap(self.task)
        self._build_optimizer()
        self.scaler = grad_scaler(tc.mixed_precision, self.device)
        self.summaries = Summaries(logdir) if world.is_main else _UnwrittenSummaries(logdir)
        self.step = 0
        self.skipped_steps = 0
        # Wall seconds of training steps and their input so far, over all resumes.
        self.train_seconds = 0.0
        self._saved_step: int | None = None
        self._stop_requested = False
        # Why training ended for good ("" while it runs, or when stopped by a signal).
        self.stop_reason = ""
        # The stream position after the last batch trained on (batches made ahead excluded).
        self._stream_state: dict[str, Any] = copy.deepcopy(self.stream.state_dict())
        self._epoch = 0
        self._batches: BatchPrefetcher[MicroBatch] | None = None
        # Seconds spent getting batches (next indices, collating) since the last log line.
        self.data_wait_seconds = 0.0

    def _build_optimizer(self) -> None:
        """Sets ``params`` and ``optimizer`` over the task's trainable parameters (after
        wrapping, which may replace them by shards)."""
        tc = self.config.trainer
        named_params = [(n, p) for n, p in self.task.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named_params]
        self.optimizer = tc.optimizer.build(self.params, lr=self.schedule(1))
        self.parallel.prepare_optimizer(self.optimizer)
        self.ema = tc.ema.build(named_params)
        self.weight_noise = tc.weight_noise.build(self.params, seed=self.config.seed)
        if tc.use_ema_for_eval and not self.ema.enabled:
            raise ValueError("trainer.use_ema_for_eval needs trainer.ema.decay > 0")

    # ---- checkpoints ------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        """Everything a checkpoint holds besides the model and optimizer tensors."""
        extra = {
            "config": self.config.to_dict(),
            "data_stream": copy.deepcopy(self._stream_state),
            "rng": rng_state(self.device),
            "skipped_steps": self.skipped_steps,
            "train_seconds": self.train_seconds,
        }
        if self.world.is_distributed:
            extra.update(
                rank_rngs=self.parallel.gather_objects(rng_state(self.device)),
                world_size=self.world.world_size,
            )
        if self.ema.enabled:
            extra[EMA_CHECKPOINT_KEY] = self.ema.state_dict()
        if self.config.trainer.weight_noise.std > 0:
            extra[WEIGHT_NOISE_CHECKPOINT_KEY] = self.weight_noise.state_dict()
        if self.scaler.is_enabled():
            extra[GRAD_SCALER_CHECKPOINT_KEY] = self.scaler.state_dict()
        return extra

    def save(self) -> Path:
        tc = self.config.trainer
        try:
            path = self.parallel.save(
                self.context.checkpoint_dir,
                self.step,
                self.task,
                self.optimizer,
                to_cpu(self._extra_state()),
            )
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}; training stops at step {self.step}: make room and run the same command "
                f"to resume from the newest of them"
            ) from e.__cause__
        self._saved_step = self.step
        if self.world.is_main:
            prune_checkpoints(
                self.context.checkpoint_dir,
                tc.keep_checkpoints,
                protected=self.score_rules.best_steps(),
            )
        return path

    def restore(self) -> bool:
        """Restores the newest good checkpoint, if any; returns whether one was found."""
        found = self.parallel.load(self.context.checkpoint_dir, self.task, self.optimizer)
        if found is None:
            return False
        path, payload = found
        self._restore_average_and_noise(payload, path)
        if self.scaler.is_enabled() and GRAD_SCALER_CHECKPOINT_KEY in payload:
            self.scaler.load_state_dict(payload[GRAD_SCALER_CHECKPOINT_KEY])
        self.stream.load_state_dict(payload["data_stream"])
        self._stream_state = copy.deepcopy(self.stream.state_dict())
        self.step = int(payload["step"])
        self._saved_step = self.step
        self.skipped_steps = int(payload.get("skipped_steps", 0))
        self.train_seconds = float(payload.get("train_seconds", 0.0))
        rank_rngs = payload.get("rank_rngs") or [payload["rng"]]
        data_rank = self.parallel.data_parallel_rank
        if len(rank_rngs) == self.parallel.data_parallel_size == self.world.world_size:
            set_rng_state(rank_rngs[self.world.rank], self.device)
        elif data_rank == 0:  # (tensor-parallel ranks all share rank 0's stream)
            set_rng_state(rank_rngs[0], self.device)
        else:  # resharded to more ranks: fresh, distinct dropout streams
            torch.manual_seed(self.config.seed + data_rank + 1_000_003 * self.step)
        if self.world.is_main:
            tqdm.write(f"[seqlab] resumed from {path} at step {self.step}")
        self.parallel.barrier()
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

    # ---- input ------------------------------------------------------------------------------
    def _micro_batch(self, global_indices: list[int]) -> MicroBatch:
        """This rank's slice of ``global_indices``, collated (pinned for a CUDA copy).

        A rank without examples (a global batch smaller than the world) still gets one,
        weighted 0, so that every rank takes part in the same collectives.
        """
        local = self.parallel.local_indices(global_indices)
        batch = self.data.collate(self.examples, local or list(global_indices[:1]))
        if self.device.type == "cuda":
            batch = batch.transform(lambda v: v.pin_memory() if isinstance(v, torch.Tensor) else v)
        return MicroBatch(
            global_indices=list(global_indices),
            batch=batch,
            tokens=batch_tokens(batch) if local and self.parallel.counts_batch else 0.0,
            has_examples=bool(local),
            stream_state=copy.deepcopy(self.stream.state_dict()),
            epoch=int(self.stream.epoch),
        )

    def _prefetch_depth(self) -> int:
        """trainer.prefetch_batches, with auto (-1) as measured: a thread ahead of a GPU, none
        on a CPU whose cores the step already uses (a 2-core run was 5% slower with it)."""
        depth = self.config.trainer.prefetch_batches
        if depth >= 0:
            return depth
        return 2 if self.device.type == "cuda" else 0

    def _next_micro_batch(self) -> MicroBatch:
        return self._micro_batch(next(self.stream))

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

    def train_step(self, indices: list[int] | None = None) -> dict[str, float]:
        """One optimizer update; returns its metrics (averaged over ranks and batches; counts
        such as ``num_target_tokens`` totalled).

        The update trains on ``grad_accum_steps`` global batches, of which this rank trains
        on its slice: ``indices`` and the next ones from the stream, or (``indices`` None,
        inside ``train()``) the next ones the prefetcher made.
        """
        accum = self.config.trainer.grad_accum_steps
        if indices is not None:
            micro_batches = [self._micro_batch(indices)]
            micro_batches += [self._next_micro_batch() for _ in range(accum - 1)]
        else:
            assert self._batches is not None, "train_step() without indices runs in train()"
            micro_batches = [self._batches.next() for _ in range(accum)]
        return self._update(micro_batches)

    def _update(self, micro_batches: list[MicroBatch]) -> dict[str, float]:
        lr = self.schedule(self.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.weight_noise.applied(self.step):
            problem, global_loss, sums = self._accumulate_gradients(micro_batches)
            grad_norm, overflow = None, False
            if problem is None:
                problem, grad_norm = self._clip_gradients(global_loss)
                # The loss is finite, so the problem is a non-finite gradient: with float16's
                # loss scaler, an overflow the scaler handles.
                overflow = problem is not None and self.scaler.is_enabled()
        self._apply_update(problem, overflow)
        self.step += 1
        set_quantization_step(self.task, self.step)
        self._stream_state = micro_batches[-1].stream_state
        self._epoch = micro_batches[-1].epoch
        names = sorted(sums)
        reduced = self.parallel.sum_over_data(torch.tensor([sums[n] for n in names]))
        out = {
            name: reduce_metric(name, total, weight)
            for name, (total, weight) in zip(names, reduced.tolist(), strict=True)
        }
        out.update(
            learning_rate=lr,
            grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
            tokens=float(
                self.parallel.sum_over_data(
                    torch.tensor(sum(m.tokens for m in micro_batches), dtype=torch.float64)
                )
            ),
            skipped_steps=float(self.skipped_steps),
            # Broken input lines the data reader skipped (speech manifests), 0 if none.
            skipped_examples=float(getattr(self.examples, "num_skipped", 0)),
        )
        return out

    def _accumulate_gradients(
        self, micro_batches: list[MicroBatch]
    ) -> tuple[str | None, torch.Tensor, dict[str, list[float]]]:
        """Forward and backward of this rank's slice of each global batch.

        Returns:
          (problem or None, the last batch's global loss, per metric this rank's
          [sum of value * weight, sum of weight]).
        """
        tc = self.config.trainer
        sums: dict[str, list[float]] = {}
        problem, global_loss = None, torch.zeros((), dtype=torch.float64)
        for number, micro in enumerate(micro_batches):
            batch = micro.batch.to(self.device, non_blocking=True)
            last = number == len(micro_batches) - 1
            with self.parallel.gradient_sync(self.model, last):
                global_loss, metrics = self.parallel.forward_backward(
                    self.model,
                    batch,
                    micro.has_examples,
                    forward_context=lambda: autocast(tc.mixed_precision, self.device),
                    scale_loss=lambda loss, share: self.scaler.scale(
                        loss * (share / len(micro_batches))
                    ),
                )
            problem = problem or self._check_finite(global_loss, None)
            names = sorted(metrics)
            # One copy from the device for every metric with its weight.
            numbers = torch.stack(
                [
                    torch.as_tensor(x, device=self.device).detach().double()
                    for name in names
                    for x in metrics[name]
                ]
            ).tolist()
            for i, name in enumerate(names):
                value, metric_weight = numbers[2 * i : 2 * i + 2]
                w = metric_weight if micro.has_examples else 0.0
                total = sums.setdefault(name, [0.0, 0.0])
                total[0] += value * w
                total[1] += w
        return problem, global_loss, sums

    def _clip_gradients(self, loss: torch.Tensor) -> tuple[str | None, torch.Tensor]:
        """Clips the gradients to ``clip_gradient_norm``; returns (problem, norm before)."""
        tc = self.config.trainer
        self.scaler.unscale_(self.optimizer)
        grad_norm = self.parallel.gradient_norm(self.params)
        # Checked before clipping: scaling by max_norm / inf would turn every gradient
        # into 0 or NaN and hide which parameters were at fault.
        problem = self._check_finite(loss, grad_norm)
        if problem is None and tc.clip_gradient_norm > 0:
            clip_gradients_(self.params, tc.clip_gradient_norm, grad_norm)
        return problem, grad_norm

    def _apply_update(self, problem: str | None, overflow: bool) -> None:
        """Steps the optimizer, or handles ``problem`` by trainer.nan_policy.

        With float16's loss scaler, an ``overflow`` (a non-finite gradient of a finite loss)
        is expected now and then: the scaler skips that update and lowers its scale, whatever
        the policy.
        """
        tc = self.config.trainer
        if problem is not None and not overflow:
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
            self.scaler.step(self.optimizer)  # skipped by the scaler on an overflow
            self.scaler.update()
        self.ema.update(self.step + 1)

    # ---- eval and decode ----------------------------------------------------------------------
    def _on_evaluation_task(self, run: Callable[[RunContext, str], None]) -> None:
        """Runs ``run(context, job suffix)`` on rank 0 with the weights to evaluate (the
        moving average if asked for; a full replica under FSDP2) while other ranks wait."""
        weights: contextlib.AbstractContextManager = contextlib.nullcontext()
        suffix = ""
        if self.config.trainer.use_ema_for_eval:
            weights, suffix = self.ema.swapped_in(), EMA_JOB_SUFFIX
        with weights, self.parallel.evaluation_task(self.task, self.config) as task:
            if task is not None:
                run(dataclasses.replace(self.context, task=task), suffix)

    def run_evals(self) -> None:
        def run(context: RunContext, suffix: str) -> None:
            for dataset in self.config.trainer.eval_datasets:
                metrics = evaluate(context, dataset, show_progress=self.show_bars)
                job = f"eval_{dataset}{suffix}"
                self.summaries.scalars(job, self.step, metrics)
                write_eval_metrics(self.logdir / job, self.step, metrics)
                self.score_rules.track(job, self.step, metrics)
                tqdm.write(f"[seqlab] step {self.step} eval {dataset}{suffix}: " + _fmt(metrics))

        self._on_evaluation_task(run)

    def run_decodes(self) -> None:
        tc = self.config.trainer

        def run(context: RunContext, suffix: str) -> None:
            for dataset in tc.decode_datasets:
                results, metrics = decode_dataset(
                    context, dataset, limit=tc.decode_limit, show_progress=self.show_bars
                )
                job = f"decode_{dataset}{suffix}"
                write_decode_outputs(self.logdir / job, self.step, results, metrics)
                self.summaries.scalars(job, self.step, metrics)
                self.score_rules.track(job, self.step, metrics)
                alignment = getattr(context.task, "alignment", None)
                if alignment is not None:
                    examples = self.data.examples(dataset)
                    batch = self.data.collate(examples, [0]).to(self.device)
                    self.summaries.alignment(job, self.step, alignment(batch))
                tqdm.write(f"[seqlab] step {self.step} decode {dataset}{suffix}: " + _fmt(metrics))

        self._on_evaluation_task(run)

    # ---- keep-best and early stop -------------------------------------------------------------
    def _act_on_scores(self) -> None:
        """After this step's evals and decodes: saves a checkpoint of a step that is among the
        best without one, and stops when trainer.early_stop says so. Every rank agrees."""
        rules = self.score_rules
        if not rules.enabled:
            return
        save_best = False
        if self.world.is_main and rules.problem is None:
            rules.history.save()
            save_best = self.step in rules.best_steps() and self._saved_step != self.step
            self.stop_reason = rules.early_stop_reason(self.step)
        flags = torch.tensor(
            [float(rules.problem is not None), float(save_best), float(bool(self.stop_reason))]
        )
        self.parallel.all_reduce(flags, op="max")
        if flags[0]:
            raise rules.problem or ConfigError("a tracked dev metric is missing (see rank 0)")
        if flags[1]:
            self.save()
        if flags[2]:
            self.stop_reason = self.stop_reason or "trainer.early_stop (decided on rank 0)"
            self._stop_requested = True
            tqdm.write(f"[seqlab] step {self.step}: {self.stop_reason}; stopping")

    # ---- the loop ---------------------------------------------------------------------------
    def _agree_on_saving(self, due_by_time: bool) -> bool:
        """Every rank saves, and stops on a signal, at the same step, if any rank wants to."""
        flags = torch.tensor([float(self._stop_requested), float(due_by_time)])
        self.parallel.all_reduce(flags, op="max")
        self._stop_requested = bool(flags[0])
        return bool(flags[1])

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = True
        tqdm.write(f"[seqlab] signal {signum}: saving a checkpoint after this step, then exiting")

    def _log(
        self, metrics: dict[str, float], bar: Any, elapsed: float, tokens: float, steps: int
    ) -> None:
        """Writes the step's summaries, and shows them on the bar or as a plain line."""
        tc = self.config.trainer
        metrics["tokens_per_second"] = tokens / elapsed
        metrics["steps_per_second"] = steps / elapsed
        metrics["epoch"] = float(self._epoch)
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
            epoch=self._epoch,
        )
        if self.show_progress and not self.show_bars:
            remaining = (tc.max_steps - self.step) / max(metrics["steps_per_second"], 1e-9)
            eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if remaining < 86400 else ">1d"
            tqdm.write(
                f"[seqlab] step {self.step}/{tc.max_steps} loss={metrics['loss']:.4f} "
                f"lr={metrics['learning_rate']:.3g} tokens/s={metrics['tokens_per_second']:.0f} "
                f"data_wait={metrics['data_wait_fraction']:.1%} epoch={self._epoch} eta={eta}"
            )

    def train(self) -> int:
        """Trains to ``max_steps``; returns the final step."""
        tc = self.config.trainer
        resumed = self.restore()
        # What a crashed run logged past this step is replaced by what this run logs.
        self.summaries.resume_after(self.step)
        if not resumed and tc.init_from_checkpoint:
            summary = warm_start(self.task, tc.init_from_checkpoint, self.logdir / TOKENIZER_FILE)
            if self.ema.enabled:
                self.ema.reset()
            if self.world.is_main:
                tqdm.write(f"[seqlab] {summary}")
        if self.world.is_main:
            entry, changes = record_config_history(self.logdir, self.config, self.step)
            if changes:
                tqdm.write(
                    f"[seqlab] config changed since the last run, from step {self.step} on "
                    f"(recorded in {entry}):\n" + textwrap.indent(changes, "[seqlab]   "),
                    end="",
                )
            write_config_files(self.config, self.logdir, self.preset)
            clear_finished(self.logdir)
            # Steps past the one resumed from are scored again.
            self.score_rules.history.forget_after(self.step)
        previous = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)
        }
        last_save = time.time()
        window_tokens, window_steps, window_start = 0.0, 0, time.time()
        self.data_wait_seconds = 0.0
        if 0 < tc.max_train_seconds <= self.train_seconds:
            self.stop_reason = f"trainer.max_train_seconds={tc.max_train_seconds:g} spent"
            tqdm.write(f"[seqlab] {self.stop_reason} at step {self.step}")
            self._stop_requested = True
        bar = tqdm(
            total=tc.max_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not self.show_bars,
            dynamic_ncols=True,
        )
        self._batches = BatchPrefetcher(self._next_micro_batch, self._prefetch_depth())
        try:
            while self.step < tc.max_steps and not self._stop_requested:
                step_start = time.perf_counter()
                waited = self._batches.wait_seconds
                metrics = self.train_step()
                self.data_wait_seconds += self._batches.wait_seconds - waited
                self.train_seconds += time.perf_counter() - step_start
                if 0 < tc.max_train_seconds <= self.train_seconds and not self._stop_requested:
                    self._stop_requested = True
                    self.stop_reason = f"trainer.max_train_seconds={tc.max_train_seconds:g} spent"
                    tqdm.write(
                        f"[seqlab] trained for {self.train_seconds:.0f} s "
                        f"(trainer.max_train_seconds={tc.max_train_seconds:g}): stopping at "
                        f"step {self.step}"
                    )
                window_tokens += metrics["tokens"]
                window_steps += 1
                bar.update(1)
                if self.step % tc.log_every_steps == 0 or self.step == tc.max_steps:
                    elapsed = max(time.time() - window_start, 1e-9)
                    self._log(metrics, bar, elapsed, window_tokens, window_steps)
                    window_tokens, window_steps, window_start = 0.0, 0, time.time()
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
                evaluation_start = time.time()
                scored = False
                if tc.eval_every_steps > 0 and self.step % tc.eval_every_steps == 0:
                    self.run_evals()
                    scored = True
                if tc.decode_every_steps > 0 and self.step % tc.decode_every_steps == 0:
                    self.run_decodes()
                    scored = True
                if scored:
                    self._act_on_scores()
                # Evals and decodes are not training time: tokens/s leaves them out.
                window_start += time.time() - evaluation_start
            if self._saved_step != self.step:
                self.save()
            if self.step >= tc.max_steps and not self.stop_reason:
                self.stop_reason = f"trainer.max_steps={tc.max_steps} reached"
            if self.stop_reason and self.world.is_main:
                mark_finished(self.logdir, self.step, self.stop_reason)
        finally:
            self._batches.close()
            self._batches = None
            # Batches made ahead are dropped: the stream continues after the last one trained on.
            self.stream.load_state_dict(copy.deepcopy(self._stream_state))
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.summaries.close()
        return self.step


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    )
