"""The trainer of a torchrun job: DDP or FSDP2, gradient accumulation, sharded checkpoints.

Every rank runs the same loop over the same global batch stream and trains on its slice of
each global batch (seqlab.distributed.data_sharding). The loss of each slice is scaled by
its share of the global batch's loss weight (e.g. target tokens), so the averaged gradient
equals the one a single process computes on the whole batch. Rank 0 alone writes config
files, summaries, eval and decode outputs, and prints progress.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from seqlab.distributed.checkpoint import (
    load_sharded_state,
    read_extra,
    save_sharded_checkpoint,
    sharded_model_shapes,
    verify_sharded_checkpoint,
)
from seqlab.distributed.data_sharding import shard_indices
from seqlab.distributed.optimizer_state import optimizer_state_by_name
from seqlab.distributed.process_group import (
    World,
    all_reduce,
    barrier,
    broadcast_object,
    gather_objects,
    init_process_group,
    main_first,
    world_from_env,
)
from seqlab.distributed.wrapping import TrainingForward, wrap_for_training
from seqlab.models.base import Task
from seqlab.quant.qat import set_quantization_step
from seqlab.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
)
from seqlab.train.checkpoint_fit import check_model_fit
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.summaries import Summaries
from seqlab.train.trainer import Trainer, autocast, rng_state, set_rng_state

log = logging.getLogger(__name__)

_TOKENS = "tokens"  # the token count travels with the metrics' sums


class _UnwrittenSummaries(Summaries):
    """The summaries of ranks other than 0: every rank computes them, rank 0 writes them."""

    def scalars(self, job: str, step: int, values: dict[str, float]) -> None:
        pass

    def alignment(self, job: str, step: int, probs: torch.Tensor, tag: str = "attention") -> None:
        pass


def _batch_tokens(batch: Any) -> float:
    """Real (unpadded) tokens of a collated batch: its own count (e.g. speech frames plus
    transcript tokens) if it has one, else source plus target tokens."""
    if "num_tokens" in batch:
        return float(batch.num_tokens)
    return float((1.0 - batch.src_paddings).sum() + (1.0 - batch.tgt_paddings).sum())


def _refuse_unsharded_extras(config: ExperimentConfig) -> None:
    """FSDP2 shards the parameters; the moving average, weight noise and warm start use full
    copies."""
    tc = config.trainer
    used = [
        name
        for name, on in (
            ("trainer.ema", tc.ema.decay > 0),
            ("trainer.weight_noise", tc.weight_noise.std > 0),
            ("trainer.init_from_checkpoint", bool(tc.init_from_checkpoint)),
        )
        if on
    ]
    if used:
        raise ValueError(
            f"{' and '.join(used)} do not work with trainer.distributed.strategy=fsdp yet; "
            "use strategy=ddp or turn them off"
        )


class DistributedTrainer(Trainer):
    """Trains with every process of a torchrun job, or with gradient accumulation in one.

    With one process and ``grad_accum_steps == 1`` it behaves exactly as the Trainer (use
    ``make_trainer``, which then returns a plain Trainer).
    """

    def __init__(self, config: ExperimentConfig, logdir: Path, show_progress: bool = True) -> None:
        tc = config.trainer
        if tc.grad_accum_steps < 1:
            raise ValueError(f"trainer.grad_accum_steps must be >= 1, got {tc.grad_accum_steps}")
        self.world: World = init_process_group(tc.distributed)
        self.is_main_process = self.world.is_main
        # Rank 0 first prepares the corpus and tokenizer in the shared caches.
        with main_first(self.world):
            super().__init__(config, logdir, show_progress=show_progress and self.world.is_main)
        if not self.world.is_main:
            self.summaries = _UnwrittenSummaries(logdir)
            # Same initial weights everywhere (seeded above); different dropout per rank.
            torch.manual_seed(config.seed + self.world.rank)
        self.model: nn.Module
        if self.world.is_distributed:
            if tc.distributed.strategy == "fsdp":
                _refuse_unsharded_extras(config)
            self.model = wrap_for_training(self.task, tc.distributed)
            self._build_optimizer()  # FSDP2 replaced the parameters by sharded ones
        else:
            self.model = TrainingForward(self.task)
        self._eval_replica: Task | None = None

    # ---- one update ---------------------------------------------------------------------------
    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Skips the gradient all-reduce/reduce-scatter on all but the last accumulated batch."""
        if isinstance(self.model, FSDPModule):
            self.model.set_requires_gradient_sync(last)
        elif isinstance(self.model, nn.parallel.DistributedDataParallel) and not last:
            return self.model.no_sync()
        return contextlib.nullcontext()

    def train_step(self, indices: list[int]) -> dict[str, float]:
        """One optimizer update on the global batch ``indices`` (plus ``grad_accum_steps - 1``
        more from the stream), of which this rank trains on its shard."""
        tc = self.config.trainer
        if not self.world.is_distributed and tc.grad_accum_steps == 1:
            return super().train_step(indices)
        global_batches = [indices] + [next(self.stream) for _ in range(tc.grad_accum_steps - 1)]
        lr = self.schedule(self.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.weight_noise.applied(self.step):
            problem, global_loss, sums = self._accumulate_gradients(global_batches)
            grad_norm = None
            if problem is None:
                problem, grad_norm = self._clip_gradients(global_loss)
        self._apply_update(problem)
        self.step += 1
        set_quantization_step(self.task, self.step)
        names = sorted(sums)
        reduced = all_reduce(torch.stack([sums[n] for n in names]), self.world)
        out = {
            name: float(total / weight) if weight > 0 else 0.0
            for name, (total, weight) in zip(names, reduced.tolist(), strict=True)
        }
        out.update(
            learning_rate=lr,
            grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
            tokens=out.pop(_TOKENS),
            skipped_steps=float(self.skipped_steps),
        )
        return out

    def _accumulate_gradients(
        self, global_batches: list[list[int]]
    ) -> tuple[str | None, torch.Tensor, dict[str, torch.Tensor]]:
        """Forward and backward of this rank's shard of each global batch.

        Returns:
          (problem or None, the last batch's global loss, per metric this rank's
          [sum of value * weight, sum of weight], with the token count under _TOKENS as
          [tokens, 1]).
        """
        tc = self.config.trainer
        sums: dict[str, torch.Tensor] = {_TOKENS: torch.zeros(2, dtype=torch.float64)}
        problem, global_loss = None, torch.zeros((), dtype=torch.float64)
        for number, global_indices in enumerate(global_batches):
            shard = shard_indices(global_indices, self.world.rank, self.world.world_size)
            # A rank without examples (a global batch smaller than the world) still runs one,
            # weighted 0, so that every rank takes part in the same collectives.
            batch = self._collate(shard or list(global_indices[:1]))
            with self._gradient_sync(last=number == len(global_batches) - 1):
                with autocast(tc.mixed_precision):
                    loss, metrics = self.model(batch)
                weight = float(metrics["loss"][1]) if shard else 0.0
                local = torch.tensor([float(loss.detach()) * weight, weight], dtype=torch.float64)
                weighted_loss, total_weight = all_reduce(local, self.world).tolist()
                global_loss = torch.tensor(weighted_loss / max(total_weight, 1e-12))
                problem = problem or self._check_finite(global_loss, None)
                # DDP and FSDP2 average gradients over ranks, hence the world size.
                scale = weight / max(total_weight, 1e-12) * self.world.world_size
                scale = 0.0 if problem else scale / len(global_batches)
                (loss * scale).backward()
            for name, (value, metric_weight) in metrics.items():
                w = float(metric_weight) if shard else 0.0
                sums.setdefault(name, torch.zeros(2, dtype=torch.float64))
                sums[name] += torch.tensor([float(value) * w, w], dtype=torch.float64)
            sums[_TOKENS][0] += _batch_tokens(batch) if shard else 0.0
        sums[_TOKENS][1] = 1.0 / self.world.world_size  # summed over ranks: 1
        return problem, global_loss, sums

    def _gradient_norm(self) -> torch.Tensor:
        norm = super()._gradient_norm()
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def _agree_on_saving(self, due_by_time: bool) -> bool:
        """Every rank saves, and stops on a signal, at the same step, if any rank wants to."""
        flags = torch.tensor([float(self._stop_requested), float(due_by_time)])
        all_reduce(flags, self.world, op="max")
        self._stop_requested = bool(flags[0])
        return bool(flags[1])

    # ---- checkpoints --------------------------------------------------------------------------
    def _sharded_state(self) -> dict[str, Any]:
        """This rank's model and optimizer tensors by parameter name (shards under FSDP2)."""
        model, optimizer = get_state_dict(self.task, self.optimizer)
        return {"model": model, "optimizer": optimizer}

    def save(self) -> Path:
        if not self.world.is_distributed:
            return super().save()
        rank_rngs = gather_objects(rng_state(), self.world)
        extra = {k: v for k, v in self._payload().items() if k not in ("model", "optimizer")}
        extra.update(rank_rngs=rank_rngs, world_size=self.world.world_size)
        path = save_sharded_checkpoint(
            self.context.checkpoint_dir,
            self.step,
            self._sharded_state(),
            extra,
            self.config.trainer.keep_checkpoints,
            self.world,
        )
        self._saved_step = self.step
        return path

    def _newest_good_checkpoint(self) -> Path | None:
        for _, path in reversed(list_checkpoints(self.context.checkpoint_dir)):
            try:
                if path.is_dir():
                    verify_sharded_checkpoint(path)
                    read_extra(path)
                else:
                    load_checkpoint(path)
                return path
            except CheckpointError as e:
                log.warning("%s; trying the previous checkpoint", e)
                tqdm.write(f"[seqlab] {e}; trying the previous checkpoint")
        return None

    def restore(self) -> bool:
        """Restores the newest good checkpoint, of any world size and either format."""
        if not self.world.is_distributed:
            return super().restore()
        found = None
        if self.world.is_main:
            for path in remove_stale_temporaries(self.context.checkpoint_dir):
                tqdm.write(f"[seqlab] removed {path}, left half-written by an interrupted save")
            found = self._newest_good_checkpoint()
        found = broadcast_object(None if found is None else str(found), self.world)
        if found is None:
            return False
        path = Path(found)
        if path.is_dir():
            payload = read_extra(path)
            check_model_fit(self.task, sharded_model_shapes(path), path, payload.get("config"))
            state = self._sharded_state()
            load_sharded_state(path, state)
            set_state_dict(
                self.task,
                self.optimizer,
                model_state_dict=state["model"],
                optim_state_dict=state["optimizer"],
            )
        else:  # a single-process checkpoint: every rank reads the whole file
            payload = load_checkpoint(path)
            check_model_fit(self.task, payload["model"], path, payload.get("config"))
            names = {id(p): n for n, p in self.task.named_parameters()}
            ordered = [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
            set_state_dict(
                self.task,
                self.optimizer,
                model_state_dict=payload["model"],
                optim_state_dict=optimizer_state_by_name(payload["optimizer"], ordered),
                options=StateDictOptions(full_state_dict=True),
            )
        self._restore_average_and_noise(payload, path)
        self.stream.load_state_dict(payload["data_stream"])
        self.step = int(payload["step"])
        self._saved_step = self.step
        self.skipped_steps = int(payload.get("skipped_steps", 0))
        self.train_seconds = float(payload.get("train_seconds", 0.0))
        rank_rngs = payload.get("rank_rngs") or [payload["rng"]]
        if len(rank_rngs) == self.world.world_size:
            set_rng_state(rank_rngs[self.world.rank])
        elif self.world.is_main:
            set_rng_state(rank_rngs[0])
        else:  # resharded to more ranks: fresh, distinct dropout streams
            torch.manual_seed(self.config.seed + self.world.rank + 1_000_003 * self.step)
        log.info("resumed from %s (step %d)", path, self.step)
        if self.world.is_main:
            tqdm.write(f"[seqlab] resumed from {path} at step {self.step}")
        barrier(self.world)
        return True

    # ---- eval and decode ----------------------------------------------------------------------
    def _on_main_process(self, run: Any) -> None:
        """Runs an eval or decode on rank 0 while the others wait.

        Under FSDP2, rank 0 runs it on a full replica gathered from the shards.
        """
        if not self.world.is_distributed:
            run()
            return
        sharded = self.config.trainer.distributed.strategy == "fsdp"
        full = None
        if sharded:
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full = get_model_state_dict(self.task, options=options)
        if self.world.is_main:
            task = self.task
            if sharded:
                if self._eval_replica is None:
                    self._eval_replica = self.config.task.build()
                    self._eval_replica.bind_data(self.data)
                self._eval_replica.load_state_dict(full)
                task = self._eval_replica
            trained, self.task, self.context.task = self.task, task, task
            try:
                run()
            finally:
                self.task = self.context.task = trained
        barrier(self.world)

    def run_evals(self) -> None:
        self._on_main_process(super().run_evals)

    def run_decodes(self) -> None:
        self._on_main_process(super().run_decodes)


def make_trainer(config: ExperimentConfig, logdir: Path, show_progress: bool = True) -> Trainer:
    """The Trainer for this process: distributed under torchrun (WORLD_SIZE > 1) or with
    gradient accumulation, else the plain single-process Trainer."""
    if world_from_env().is_distributed or config.trainer.grad_accum_steps != 1:
        return DistributedTrainer(config, logdir, show_progress=show_progress)
    return Trainer(config, logdir, show_progress=show_progress)
