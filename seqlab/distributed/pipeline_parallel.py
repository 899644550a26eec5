"""Pipeline parallelism: a model's layers cut into one stage per process of a pipeline (see
seqlab.distributed.pipeline_stages), with micro-batches flowing through them on a GPipe or
1F1B schedule of ``torch.distributed.pipelining``.

The job's processes form a (data x pipeline) ``DeviceMesh`` (``trainer.distributed.mesh``;
by default one pipeline of all of them): each row of consecutive ranks is one pipeline,
rank ``d * stages + s`` stage ``s`` of pipeline ``d``. Every rank builds the whole task (same
seed, same weights), then keeps only its stage. The stages of a pipeline that keep a copy of
the shared embedding matrix sum its gradients after every global batch, so the copies stay
equal; then each stage averages its gradients with the same stage of the other pipelines (its
column of the mesh), as DDP's ranks do. Checkpoints go through DCP under the unsplit model's
names (DCP keeps one copy of what several ranks save under one key), so a pipeline run
resumes in one process or under DDP, and a single-process checkpoint resumes as a pipeline.

Each pipeline collates its slice of the global batch (as DDP's ranks do), and every stage of
it the same slice; the schedule splits it into micro-batches along the batch dimension (padded
with empty rows to a multiple of them). The last stage computes each micro-batch's loss,
weighted by its share of the global batch's loss weight (target tokens) times the number of
pipelines, so that the averaged gradients are those of the unsplit model on the whole batch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from tqdm.auto import tqdm

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.data.data_sharding import shard_indices
from seqlab.distributed.checkpoint import (
    load_sharded_state,
    read_extra,
    save_sharded_checkpoint,
    sharded_model_shapes,
)
from seqlab.distributed.optimizer_state import optimizer_state_by_name
from seqlab.distributed.pipeline_stages import (
    StageModule,
    describe_stages,
    stage_layers,
    stage_module_for,
)
from seqlab.distributed.process_group import (
    average_over,
    barrier,
    gather_objects,
    model_parallel_mesh,
)
from seqlab.distributed.strategies import DataParallel
from seqlab.models.base import Metrics, Task
from seqlab.train.checkpoint import CheckpointError, load_checkpoint
from seqlab.train.checkpoint_fit import check_model_fit
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.parallelism import to_cpu
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.world import World


def check_pipeline(config: ParallelismConfig, task: Any, num_stages: int) -> None:
    """Refuses, in one line naming the key, a pipeline of ``num_stages`` stages (processes)
    this model cannot take."""
    module = stage_module_for(task)
    stage_layers(module.num_layers(task), num_stages, config.pipeline_boundaries)
    if config.pipeline_microbatches < num_stages:
        raise ConfigError(
            f"trainer.distributed.pipeline_microbatches={config.pipeline_microbatches} is "
            f"fewer than the {num_stages} pipeline stages (processes per pipeline); set it to "
            f"at least {num_stages}"
        )


def _combine(metrics: list[Metrics]) -> Metrics:
    """Micro-batches' metrics as one batch's: weighted means with summed weights."""
    out: Metrics = {}
    for name in metrics[0]:
        pairs = [(float(m[name][0]), float(m[name][1])) for m in metrics if name in m]
        weight = sum(w for _, w in pairs)
        out[name] = (sum(v * w for v, w in pairs) / weight if weight else 0.0, weight)
    return out


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [t for item in tree for t in _tensors(item)]


def _pad_rows(value: torch.Tensor, rows: int, fill: float) -> torch.Tensor:
    """``value`` [B, ...] with rows of ``fill`` added up to ``rows``."""
    if value.shape[0] == rows:
        return value
    pad = value.new_full((rows - value.shape[0], *value.shape[1:]), fill)
    return torch.cat([value, pad])


class PipelineParallel(DataParallel):
    """Strategy ``pipeline``: one stage of one pipeline on every rank.

    ``data_parallel_rank`` and ``data_parallel_size`` stay the world's (each rank its own
    random stream): unlike tensor parallelism, the stages of a pipeline share no dropout."""

    name = "pipeline"

    def __init__(self, config: ParallelismConfig, world: World, device: torch.device) -> None:
        super().__init__(config, world, device)
        self.mesh = model_parallel_mesh(config, world, device, "pipeline")
        self.pipeline_mesh, self.data_mesh = self.mesh["pipeline"], self.mesh["data"]
        self.num_stages = self.pipeline_mesh.size()
        self.stage_index = self.pipeline_mesh.get_local_rank()
        self.first = self.stage_index == 0
        self.last = self.stage_index == self.num_stages - 1
        self.counts_batch = self.last
        self._stage: StageModule | None = None
        self._schedule: Any = None
        self._schedule_shapes: list[torch.Size] = []
        self._tied_group: Any = None
        self._counts_tied = True
        self._scale_loss: Callable[[torch.Tensor, float], torch.Tensor] | None = None
        self._loss_share = 0.0
        self._forward_context: Callable[[], contextlib.AbstractContextManager] = (
            contextlib.nullcontext
        )

    # ---- the stage ------------------------------------------------------------------------
    def wrap(self, task: Task) -> nn.Module:
        module = stage_module_for(task)
        size = functools.partial(module.num_parameters, task)
        ranges = stage_layers(
            module.num_layers(task), self.num_stages, self.config.pipeline_boundaries, size
        )
        if self.world.is_main:
            tqdm.write(f"[seqlab] {describe_stages(ranges, [size(r) for r in ranges])}")
        sharing = module.embedding_stages(task, ranges)
        if len(sharing) > 1:  # every rank creates every pipeline's group, in the same order
            for pipeline in self.mesh.mesh.tolist():
                group = dist.new_group([pipeline[s] for s in sharing])
                if self.world.rank in pipeline:
                    self._tied_group = group
        self._counts_tied = self.stage_index == sharing[0]
        self._stage = module(task, ranges, self.stage_index, lambda: self._forward_context())
        return self._stage

    def _tied(self) -> list[nn.Parameter]:
        """This stage's copy of the embedding matrix that several stages share, if any."""
        assert self._stage is not None
        embedding = self._stage.task.embedding
        return [] if self._tied_group is None or embedding is None else [embedding.weight]

    def _schedule_for(self, batch: NestedMap, rows: int) -> Any:
        """The schedule for micro-batches of ``rows`` rows of ``batch``, made anew when the
        shapes change (a stage's buffers have static shapes)."""
        assert self._stage is not None
        inputs, outputs = self._stage.boundary_examples(batch, rows)
        shapes = [t.shape for t in _tensors((inputs, outputs))]
        if self._schedule is not None and shapes == self._schedule_shapes:
            return self._schedule
        stage = PipelineStage(
            self._stage,
            self.stage_index,
            self.num_stages,
            self.device,
            input_args=inputs,
            output_args=outputs,
            group=self.pipeline_mesh.get_group(),
        )
        schedule_class = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
        self._schedule = schedule_class[self.config.pipeline_schedule](
            stage,
            self.config.pipeline_microbatches,
            loss_fn=self._micro_batch_loss,
            scale_grads=False,
        )
        self._schedule_shapes = shapes
        return self._schedule

    def _micro_batch_loss(self, loss: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The last stage's micro-batch loss weighted by its share of the global batch's loss
        weight times the number of pipelines (``target``, the micro-batch's paddings, is what
        the schedule requires)."""
        assert self._stage is not None and self._scale_loss is not None
        weight = float(self._stage.metrics[-1]["loss"][1])
        return self._scale_loss(loss, weight * self._loss_share)

    # ---- training ---------------------------------------------------------------------------
    def forward_backward(
        self,
        model: nn.Module,
        batch: NestedMap,
        has_examples: bool,
        forward_context: Callable[[], contextlib.AbstractContextManager],
        scale_loss: Callable[[torch.Tensor, float], torch.Tensor],
    ) -> tuple[torch.Tensor, Metrics]:
        """Runs the schedule over this pipeline's slice of the global batch; returns the
        global loss on every rank and the metrics (weight 0 on all but the last stage)."""
        stage = self._stage
        assert stage is not None
        microbatches = self.config.pipeline_microbatches
        rows = -(-batch[stage.root_field].shape[0] // microbatches) * microbatches
        inputs = {
            name: _pad_rows(batch[name], rows, 1.0 if name.endswith("paddings") else 0)
            for name in stage.batch_fields
        }
        weight = stage.loss_weight(batch) if has_examples else 0.0
        total = torch.tensor([weight], dtype=torch.float64, device=self.device)
        dist.all_reduce(total, group=self.data_mesh.get_group())  # the global batch's
        self._loss_share = self.data_mesh.size() / max(float(total), 1e-12) if weight else 0.0
        self._scale_loss = scale_loss
        self._forward_context = forward_context
        stage.metrics.clear()
        schedule = self._schedule_for(batch, rows // microbatches)
        args = (_pad_rows(batch[stage.root_field], rows, 0),) if self.first else ()
        # The schedule wants a target per micro-batch; the loss weights come from the metrics.
        target = inputs[stage.batch_fields[0]]
        schedule.step(*args, target=target, return_outputs=False, **inputs)
        mine = _combine(stage.metrics) if self.last else None
        if mine is not None and not has_examples:
            mine = {name: (value, 0.0) for name, (value, _) in mine.items()}
        pipelines = [m for m in gather_objects(mine, self.world) if m is not None]
        global_loss = torch.tensor(_combine(pipelines)["loss"][0])
        if mine is None:  # counted once, by the last stage
            mine = {name: (value, 0.0) for name, (value, _) in pipelines[0].items()}
        return global_loss, mine

    def gradient_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        return self._synchronising_gradients(model) if last else contextlib.nullcontext()

    @contextlib.contextmanager
    def _synchronising_gradients(self, model: nn.Module) -> Iterator[None]:
        """After the backward: sums the shared embedding's gradient over the stages of the
        pipeline, then averages every gradient over the pipelines."""
        yield
        for param in self._tied():
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad, group=self._tied_group)
        if self.data_mesh.size() > 1:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            average_over(grads, self.data_mesh.get_group())

    def local_indices(self, global_indices: Sequence[int]) -> list[int]:
        """This pipeline's slice (every stage of it the same)."""
        return shard_indices(global_indices, self.data_mesh.get_local_rank(), self.data_mesh.size())

    def gradient_norm(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        """Over the stages of this rank's pipeline (the pipelines hold the same averaged
        gradients), the shared embedding's counted once."""
        tied = set() if self._counts_tied else {id(p) for p in self._tied()}
        grads = [p.grad for p in params if p.grad is not None and id(p) not in tied]
        local = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        squared = local.double().square().reshape(1)
        dist.all_reduce(squared, group=self.pipeline_mesh.get_group())
        return squared.sqrt()[0].to(local.dtype)

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
        # lists the whole model's parameters in its param groups.
        optimizer_state["param_groups"] = [
            {**group, "params": names}
            for group, names in zip(
                optimizer_state["param_groups"],
                self._whole_model_groups(optimizer_state),
                strict=True,
            )
        ]
        state = {"model": model, "optimizer": optimizer_state}
        return save_sharded_checkpoint(directory, step, state, extra, self.world)

    def _whole_model_groups(self, optimizer_state: dict[str, Any]) -> list[list[str]]:
        """The parameter names of each param group of the unsplit model's optimizer, in the
        unsplit order: every stage's names, stage by stage, the shared embedding once (a
        collective; ``optimizer_state`` keyed by name)."""
        groups = gather_objects([g["params"] for g in optimizer_state["param_groups"]], self.world)
        return [
            list(dict.fromkeys(name for ranks in groups for name in ranks[i]))
            for i in range(len(optimizer_state["param_groups"]))
        ]

    def load(
        self, directory: Path, task: Task, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        """Loads this stage's parameters and optimizer state, by name, from the newest good
        checkpoint: a .dcp of any layout, or a single-process file."""
        path = self._newest_checkpoint(directory)
        if path is None:
            return None
        if path.is_dir():
            payload = read_extra(path)
            shapes = sharded_model_shapes(path)
        else:  # every stage reads the whole file and keeps its own tensors
            payload = load_checkpoint(path)
            shapes = payload["model"]
        own = task.state_dict()
        check_model_fit(
            task, {k: v for k, v in shapes.items() if k in own}, path, payload.get("config")
        )
        model, optimizer_state = get_state_dict(task, optimizer)
        own_groups = [g["params"] for g in optimizer_state["param_groups"]]
        if path.is_dir():
            state = {"model": model, "optimizer": optimizer_state}
            load_sharded_state(path, state)
        else:
            state = {
                "model": {name: payload["model"][name] for name in own},
                "optimizer": self._stage_optimizer_state(payload, optimizer_state, path),
            }
        for group, names in zip(state["optimizer"]["param_groups"], own_groups, strict=True):
            group["params"] = names
        set_state_dict(
            task, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
        return path, payload

    def _stage_optimizer_state(
        self, payload: dict[str, Any], optimizer_state: dict[str, Any], path: Path
    ) -> dict[str, Any]:
        """The single-process checkpoint ``payload``'s optimizer state (keyed by the unsplit
        optimizer's parameter indices) keyed by name, for this stage's parameters only."""
        # The unsplit optimizer numbers its parameters group by group, each group in the
        # model's order (the order of the checkpoint's model keys).
        order = {name: i for i, name in enumerate(payload["model"])}
        names = [
            name
            for group in self._whole_model_groups(optimizer_state)
            for name in sorted(group, key=order.__getitem__)
        ]
        saved = sum(len(group["params"]) for group in payload["optimizer"]["param_groups"])
        if saved != len(names):
            raise CheckpointError(
                f"checkpoint {path}: its optimizer has {saved} parameters, this model's "
                f"{len(names)}; resume it with the optimizer it was trained with"
            )
        state = optimizer_state_by_name(payload["optimizer"], names)
        own = {name for group in optimizer_state["param_groups"] for name in group["params"]}
        state["state"] = {k: v for k, v in state["state"].items() if k in own}
        return state

    # ---- eval and decode: rank 0 evaluates the whole model, gathered from the stages ------
    @contextlib.contextmanager
    def evaluation_task(self, task: Task, config: ExperimentConfig) -> Iterator[Task | None]:
        states: list[Any] | None = [None] * self.world.world_size if self.world.is_main else None
        first_pipeline = self.data_mesh.get_local_rank() == 0  # (the others hold the same)
        dist.gather_object(to_cpu(task.state_dict()) if first_pipeline else {}, states, dst=0)
        try:
            if states is None:
                yield None
                return
            full = {name: value for state in states for name, value in state.items()}
            yield self._replica_of(full, task, config)
        finally:
            barrier(self.world)
