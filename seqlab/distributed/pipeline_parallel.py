"""Pipeline parallelism: the layers of a decoder-only Transformer LM cut into one stage per
process, with micro-batches flowing through them on a GPipe or 1F1B schedule of
``torch.distributed.pipelining``.

Every rank builds the whole task (same seed, same weights), then keeps only its stage: the
layers of other stages become ``nn.Identity`` placeholders in the ``ModuleList`` (so the kept
parameters keep the unsplit model's names), the first stage keeps the embedding and
positions, the last the final norm and the output projection, which shares the embedding
matrix: the first and last stages each hold a copy of it and sum its gradients after every
global batch, so the copies stay equal. Checkpoints go through DCP under the unsplit names, so
a pipeline run resumes in one process (and at any other layout DCP reshards to).

Every rank collates the whole global batch; the schedule splits it into micro-batches along
the batch dimension (padded with empty rows to a multiple of them). The last stage computes
each micro-batch's loss, weighted by its share of the global batch's target tokens, so the
gradients are those of the unsplit model on the whole batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from seqlab.core.config import ConfigError
from seqlab.core.layer import apply_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.distributed.checkpoint import (
    load_sharded_state,
    read_extra,
    save_sharded_checkpoint,
    sharded_model_shapes,
)
from seqlab.distributed.process_group import barrier, gather_objects
from seqlab.distributed.strategies import DataParallel
from seqlab.models.base import Metrics, Task
from seqlab.models.lm.transformer_lm import TransformerLM
from seqlab.train.checkpoint import CheckpointError
from seqlab.train.checkpoint_fit import check_model_fit
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.parallelism import to_cpu
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.world import World

# The batch fields every stage receives, split into micro-batches along dimension 0.
_STAGE_INPUTS = ("paddings", "segment_ids", "segment_positions", "labels")


def stage_layers(num_layers: int, num_stages: int, boundaries: Sequence[int]) -> list[range]:
    """The layers of each stage: from ``boundaries`` (the first layer of stages 1, 2, ...) or,
    if empty, split evenly with the remainder on the earlier stages.

    Raises:
      ConfigError: naming the key, when the layers cannot be cut into ``num_stages`` stages.
    """
    key = "trainer.distributed.pipeline_boundaries"
    if num_stages > num_layers:
        raise ConfigError(
            f"trainer.distributed.strategy=pipeline: {num_stages} stages (processes) but the "
            f"model has {num_layers} layers; use at most {num_layers} processes"
        )
    if boundaries:
        starts = [0, *boundaries]
        if len(boundaries) != num_stages - 1 or any(
            b <= a for a, b in zip(starts, [*boundaries, num_layers], strict=True)
        ):
            raise ConfigError(
                f"{key}={list(boundaries)}: give {num_stages - 1} increasing layer indices "
                f"between 1 and {num_layers - 1} (the first layer of stages 1 to "
                f"{num_stages - 1}), or leave it empty to split the layers evenly"
            )
    else:
        size, extra = divmod(num_layers, num_stages)
        starts = [s * size + min(s, extra) for s in range(num_stages)]
    ends = [*starts[1:], num_layers]
    return [range(a, b) for a, b in zip(starts, ends, strict=True)]


def check_pipeline(config: ParallelismConfig, task: Any, num_stages: int) -> None:
    """Refuses, in one line naming the key, a pipeline layout this model cannot take."""
    if not isinstance(task, TransformerLM.Config):
        raise ConfigError(
            f"trainer.distributed.strategy=pipeline supports the decoder-only Transformer "
            f"language model (TransformerLM) only, not {type(task).__qualname__}; use ddp or "
            f"fsdp"
        )
    if config.pipeline_microbatches < num_stages:
        raise ConfigError(
            f"trainer.distributed.pipeline_microbatches={config.pipeline_microbatches} is "
            f"fewer than the {num_stages} pipeline stages (processes); set it to at least "
            f"{num_stages}"
        )
    stage_layers(task.stack.num_layers, num_stages, config.pipeline_boundaries)


class TransformerLMStage(nn.Module):
    """One pipeline stage of a TransformerLM, owning the task pruned to this stage.

    ``forward(inputs, paddings, segment_ids, segment_positions, labels)`` takes ids [b, T]
    on the first stage, else the previous stage's activations [b, T, D]; it returns the
    activations [b, T, D] (float32) for the next stage, or, on the last stage, the
    micro-batch's mean loss (a scalar), whose metrics it appends to ``metrics``.
    """

    def __init__(
        self,
        task: TransformerLM,
        layers: range,
        first: bool,
        last: bool,
        forward_context: Callable[[], contextlib.AbstractContextManager],
    ) -> None:
        super().__init__()
        self.layer_indices = layers
        self.first, self.last = first, last
        self.forward_context = forward_context
        self.metrics: list[Metrics] = []
        for i in range(len(task.stack.layers)):
            if i not in layers:
                task.stack.layers[i] = nn.Identity()
        if not first:
            task.positions = None
        if not first and not last:
            task.embedding = None
        if not last:
            task.stack.final_norm = None
        self.task = task

    def forward(
        self,
        inputs: torch.Tensor,
        paddings: torch.Tensor,
        segment_ids: torch.Tensor,
        segment_positions: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        task = self.task
        with self.forward_context():
            x = task._embed(inputs, segment_positions) if self.first else inputs
            for i in self.layer_indices:
                x = task.stack.layers[i](x, paddings, causal=True, segment_ids=segment_ids)
            if not self.last:
                return x.float()  # a fixed dtype for the receiving stage's buffers
            if task.stack.final_norm is not None:
                x = task.stack.final_norm(x)
            logits = task.embedding.logits(apply_paddings(x, paddings))
            batch = NestedMap(labels=labels, paddings=paddings, num_words=0.0)
            loss, metrics = task.compute_loss(batch, NestedMap(logits=logits))
        self.metrics.append(metrics)
        return loss


def _combine(metrics: list[Metrics]) -> Metrics:
    """Micro-batches' metrics as one batch's: weighted means with summed weights."""
    out: Metrics = {}
    for name in metrics[0]:
        pairs = [(float(m[name][0]), float(m[name][1])) for m in metrics if name in m]
        weight = sum(w for _, w in pairs)
        out[name] = (sum(v * w for v, w in pairs) / weight if weight else 0.0, weight)
    return out


def _pad_rows(value: torch.Tensor, rows: int, fill: float) -> torch.Tensor:
    """``value`` [B, ...] with rows of ``fill`` added up to ``rows``."""
    if value.shape[0] == rows:
        return value
    pad = value.new_full((rows - value.shape[0], *value.shape[1:]), fill)
    return torch.cat([value, pad])


class PipelineParallel(DataParallel):
    """Strategy ``pipeline``: stage ``rank`` of ``world_size`` on every rank."""

    name = "pipeline"

    def __init__(self, config: ParallelismConfig, world: World, device: torch.device) -> None:
        super().__init__(config, world, device)
        self.num_stages = world.world_size
        self.first = world.rank == 0
        self.last = world.rank == self.num_stages - 1
        self.counts_batch = self.last
        self._stage: TransformerLMStage | None = None
        self._schedule: Any = None
        self._schedule_shape: tuple[int, ...] = ()
        self._scale_loss: Callable[[torch.Tensor, float], torch.Tensor] | None = None
        self._total_weight = 0.0
        self._forward_context: Callable[[], contextlib.AbstractContextManager] = (
            contextlib.nullcontext
        )
        # The first and last stages' copies of the tied embedding sum their gradients.
        self._tied_group = dist.new_group([0, self.num_stages - 1])

    # ---- the stage ------------------------------------------------------------------------
    def wrap(self, task: Task) -> nn.Module:
        if not isinstance(task, TransformerLM):
            raise ConfigError(
                f"trainer.distributed.strategy=pipeline supports TransformerLM only, not "
                f"{type(task).__name__}"
            )
        ranges = stage_layers(
            len(task.stack.layers), self.num_stages, self.config.pipeline_boundaries
        )
        self._stage = TransformerLMStage(
            task,
            ranges[self.world.rank],
            self.first,
            self.last,
            forward_context=lambda: self._forward_context(),
        )
        return self._stage

    def _tied(self) -> list[nn.Parameter]:
        """This stage's copy of the embedding shared by the first and last stages."""
        assert self._stage is not None
        embedding = self._stage.task.embedding
        if self.num_stages == 1 or embedding is None:
            return []
        return [embedding.weight]

    def _schedule_for(self, rows: int, length: int, model_dim: int) -> Any:
        """The schedule for micro-batches of [rows, length], made anew when the shape
        changes (stage buffers have static shapes)."""
        shape = (rows, length, model_dim)
        if self._schedule is not None and shape == self._schedule_shape:
            return self._schedule
        activations = torch.empty(shape, device="meta", requires_grad=True)
        ids = torch.empty((rows, length), dtype=torch.long, device="meta")
        output = torch.empty((), device="meta", requires_grad=True) if self.last else activations
        stage = PipelineStage(
            self._stage,
            self.world.rank,
            self.num_stages,
            self.device,
            input_args=ids if self.first else activations,
            output_args=output,
        )
        schedule_class = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
        self._schedule = schedule_class[self.config.pipeline_schedule](
            stage,
            self.config.pipeline_microbatches,
            loss_fn=self._micro_batch_loss,
            scale_grads=False,
        )
        self._schedule_shape = shape
        return self._schedule

    def _micro_batch_loss(self, loss: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The last stage's micro-batch loss weighted by its share of the global batch's loss
        weight (``target``, the micro-batch's paddings, is what the schedule requires)."""
        assert self._stage is not None and self._scale_loss is not None
        weight = float(self._stage.metrics[-1]["loss"][1])
        return self._scale_loss(loss, weight / max(self._total_weight, 1e-12))

    # ---- training ---------------------------------------------------------------------------
    def forward_backward(
        self,
        model: nn.Module,
        batch: NestedMap,
        has_examples: bool,
        forward_context: Callable[[], contextlib.AbstractContextManager],
        scale_loss: Callable[[torch.Tensor, float], torch.Tensor],
    ) -> tuple[torch.Tensor, Metrics]:
        """Runs the schedule over the whole global batch; returns the global loss on every
        rank and the metrics (weight 0 on all but the last stage)."""
        assert self._stage is not None
        microbatches = self.config.pipeline_microbatches
        rows = -(-batch.ids.shape[0] // microbatches) * microbatches
        inputs = {
            name: _pad_rows(batch[name], rows, 1.0 if name == "paddings" else 0)
            for name in _STAGE_INPUTS
        }
        # The loss weight of the LM's loss: its real target tokens.
        self._total_weight = float((1.0 - batch.paddings).sum())
        self._scale_loss = scale_loss
        self._forward_context = forward_context
        self._stage.metrics.clear()
        model_dim = self._stage.task.config.stack.layer.model_dim
        schedule = self._schedule_for(rows // microbatches, batch.ids.shape[1], model_dim)
        args = (_pad_rows(batch.ids, rows, 0),) if self.first else ()
        schedule.step(*args, target=inputs["paddings"], return_outputs=False, **inputs)
        combined = gather_objects(_combine(self._stage.metrics) if self.last else None, self.world)
        metrics = combined[-1]
        global_loss = torch.tensor(metrics["loss"][0])
        if not self.last:  # counted once, by the last stage
            metrics = {name: (value, 0.0) for name, (value, _) in metrics.items()}
        return global_loss, metrics

    def gradient_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return self._summing_tied_gradients() if last else contextlib.nullcontext()

    @contextlib.contextmanager
    def _summing_tied_gradients(self) -> Iterator[None]:
        yield
        for param in self._tied():
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad, group=self._tied_group)

    def local_indices(self, global_indices: Sequence[int]) -> list[int]:
        return list(global_indices)  # every stage sees the whole batch

    def gradient_norm(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        """Over every stage's gradients, the tied embedding's counted once (on stage 0)."""
        tied = {id(p) for p in self._tied()} if not self.first else set()
        grads = [p.grad for p in params if p.grad is not None and id(p) not in tied]
        local = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        squared = local.double().square().reshape(1)
        return self.all_reduce(squared).sqrt()[0].to(local.dtype)

    # ---- checkpoints: each stage writes its own parameters under the unsplit names ----------
    def save(
        self,
        directory: Path,
        step: int,
        task: Task,
        optimizer: torch.optim.Optimizer,
        extra: dict[str, Any],
    ) -> Path:
        model, optimizer_state = get_state_dict(task, optimizer)
        # DCP keeps one copy of a value that several ranks save under one key, so every stage
        # lists the whole model's parameters (in the unsplit order) in its param groups.
        groups = gather_objects([g["params"] for g in optimizer_state["param_groups"]], self.world)
        optimizer_state["param_groups"] = [
            {**group, "params": list(dict.fromkeys(n for ranks in groups for n in ranks[i]))}
            for i, group in enumerate(optimizer_state["param_groups"])
        ]
        state = {"model": model, "optimizer": optimizer_state}
        return save_sharded_checkpoint(directory, step, state, extra, self.world)

    def load(
        self, directory: Path, task: Task, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        """Loads this stage's parameters and optimizer state from the newest good .dcp
        checkpoint (of any layout)."""
        path = self._newest_checkpoint(directory)
        if path is None:
            return None
        if not path.is_dir():
            raise CheckpointError(
                f"checkpoint {path} is a single-process file; trainer.distributed.strategy="
                f"pipeline resumes .dcp checkpoints only: resume it with ddp or fsdp first"
            )
        payload = read_extra(path)
        own = task.state_dict()
        shapes = sharded_model_shapes(path)
        check_model_fit(
            task, {k: v for k, v in shapes.items() if k in own}, path, payload.get("config")
        )
        model, optimizer_state = get_state_dict(task, optimizer)
        own_groups = [g["params"] for g in optimizer_state["param_groups"]]
        state = {"model": model, "optimizer": optimizer_state}
        load_sharded_state(path, state)
        for group, names in zip(state["optimizer"]["param_groups"], own_groups, strict=True):
            group["params"] = names
        set_state_dict(
            task, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
        return path, payload

    # ---- eval and decode: rank 0 evaluates the whole model, gathered from the stages ------
    @contextlib.contextmanager
    def evaluation_task(self, task: Task, config: ExperimentConfig) -> Iterator[Task | None]:
        states: list[Any] | None = [None] * self.num_stages if self.world.is_main else None
        dist.gather_object(to_cpu(task.state_dict()), states, dst=0)
        try:
            if states is None:
                yield None
                return
            full = {name: value for state in states for name, value in state.items()}
            yield self._replica_of(full, task, config)
        finally:
            barrier(self.world)
