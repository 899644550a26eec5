"""The data-parallel strategies of a torchrun job: DDP (a full replica per process) and FSDP2
(parameters, gradients and optimizer state sharded), with sharded checkpoints (DCP); the
tensor-parallel strategy (seqlab.distributed.tensor_parallel) builds on them.

Every rank runs the same loop over the same global batch stream and trains on its slice of
each global batch (seqlab.data.data_sharding). Rank 0 alone writes config files, summaries,
eval and decode outputs, and prints progress.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
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
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from seqlab.data.data_sharding import shard_indices
from seqlab.distributed.checkpoint import (
    load_sharded_state,
    read_extra,
    save_sharded_checkpoint,
    sharded_model_shapes,
    verify_sharded_checkpoint,
)
from seqlab.distributed.optimizer_state import optimizer_state_by_name
from seqlab.distributed.process_group import (
    all_reduce,
    barrier,
    broadcast_object,
    gather_objects,
    init_process_group,
)
from seqlab.models.base import Task
from seqlab.quant.qat import build_task
from seqlab.train.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
)
from seqlab.train.checkpoint_fit import check_model_fit
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.parallelism import Parallelism, TrainingForward
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.world import World


class DataParallel(Parallelism):
    """Strategy ``ddp``: every rank holds the whole model; gradients are all-reduced."""

    name = "ddp"

    def __init__(self, config: ParallelismConfig, world: World, device: torch.device) -> None:
        super().__init__(world, device)
        self.config = config
        self._replica: Task | None = None
        init_process_group(config, device)

    def wrap(self, task: Task) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(TrainingForward(task), device_ids=device_ids)

    def gradient_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        if not last and isinstance(model, DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()

    def local_indices(self, global_indices: Sequence[int]) -> list[int]:
        return shard_indices(global_indices, self.world.rank, self.world.world_size)

    def all_reduce(self, values: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return all_reduce(values, self.world, op)

    def barrier(self) -> None:
        barrier(self.world)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        if not self.world.is_main:
            barrier(self.world)
        yield
        if self.world.is_main:
            barrier(self.world)

    def gather_objects(self, value: Any) -> list[Any]:
        return gather_objects(value, self.world)

    # ---- checkpoints: one directory per step, each rank writing its own tensors -------------
    def save(
        self,
        directory: Path,
        step: int,
        task: Task,
        optimizer: torch.optim.Optimizer,
        extra: dict[str, Any],
    ) -> Path:
        return save_sharded_checkpoint(
            directory, step, self._state(task, optimizer), extra, self.world
        )

    def _state(self, task: Task, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """This rank's tensors of ``task`` and ``optimizer`` as DCP saves and loads them."""
        model, optimizer_state = get_state_dict(task, optimizer)
        return {"model": model, "optimizer": optimizer_state}

    def _set_state(
        self, task: Task, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        """Loads ``state`` (laid out as ``_state`` returns it) into ``task`` and ``optimizer``."""
        set_state_dict(
            task, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )

    def _newest_good_checkpoint(self, directory: Path) -> Path | None:
        for _, path in reversed(list_checkpoints(directory)):
            try:
                if path.is_dir():
                    verify_sharded_checkpoint(path)
                    read_extra(path)
                else:
                    load_checkpoint(path)
                return path
            except CheckpointError as e:
                tqdm.write(f"[seqlab] {e}; trying the previous checkpoint")
        return None

    def _newest_checkpoint(self, directory: Path) -> Path | None:
        """The newest good checkpoint, chosen by rank 0 (after removing dead writers'
        temporaries) for every rank, or None."""
        found = None
        if self.world.is_main:
            for path in remove_stale_temporaries(directory):
                tqdm.write(f"[seqlab] removed {path}, left half-written by an interrupted save")
            found = self._newest_good_checkpoint(directory)
        found = broadcast_object(None if found is None else str(found), self.world)
        return None if found is None else Path(found)

    def load(
        self, directory: Path, task: Task, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        """Loads the newest good checkpoint of any world size and either format."""
        path = self._newest_checkpoint(directory)
        if path is None:
            return None
        if path.is_dir():
            payload = read_extra(path)
            check_model_fit(task, sharded_model_shapes(path), path, payload.get("config"))
            state = self._state(task, optimizer)
            load_sharded_state(path, state)
            self._set_state(task, optimizer, state)
        else:  # a single-process checkpoint: every rank reads the whole file
            payload = load_checkpoint(path)
            check_model_fit(task, payload["model"], path, payload.get("config"))
            names = {id(p): n for n, p in task.named_parameters()}
            ordered = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
            set_state_dict(
                task,
                optimizer,
                model_state_dict=payload["model"],
                optim_state_dict=optimizer_state_by_name(payload["optimizer"], ordered),
                options=StateDictOptions(full_state_dict=True),
            )
        return path, payload

    # ---- eval and decode: on rank 0, while the others wait ------------------------------------
    def _replica_of(
        self, full: dict[str, torch.Tensor], task: Task, config: ExperimentConfig
    ) -> Task:
        """A whole copy of ``task`` with the weights ``full`` (built once, then refilled), for
        strategies whose ranks hold pieces of the model."""
        if self._replica is None:
            self._replica = build_task(config.task, config.quant)
            self._replica.bind_data(task.data)
            self._replica.to(self.device)
        self._replica.load_state_dict(full)
        return self._replica

    @contextlib.contextmanager
    def evaluation_task(self, task: Task, config: ExperimentConfig) -> Iterator[Task | None]:
        try:
            yield task if self.world.is_main else None
        finally:
            barrier(self.world)


class GatheredReplicaEvaluation(DataParallel):
    """A strategy whose ranks hold parts of the weights (FSDP2, tensor parallelism): rank 0
    evaluates a full replica gathered from them while the others wait."""

    def __init__(self, config: ParallelismConfig, world: World, device: torch.device) -> None:
        super().__init__(config, world, device)
        self._replica: Task | None = None

    @contextlib.contextmanager
    def evaluation_task(self, task: Task, config: ExperimentConfig) -> Iterator[Task | None]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(task, options=options)
        try:
            yield self._replica_of(full, task, config) if self.world.is_main else None
        finally:
            barrier(self.world)


class FullyShardedDataParallel(GatheredReplicaEvaluation):
    """Strategy ``fsdp``: FSDP2 ``fully_shard`` on each layer of every ``nn.ModuleList`` (e.g.
    each Transformer layer, gathered just before its forward) and on the rest as one root
    unit (embeddings, final norms)."""

    name = "fsdp"

    def wrap(self, task: Task) -> nn.Module:
        reshard = self.config.fsdp_reshard_after_forward
        forward = TrainingForward(task)
        for module in task.modules():
            if isinstance(module, nn.ModuleList):
                for layer in module:
                    fully_shard(layer, reshard_after_forward=reshard)
        fully_shard(forward, reshard_after_forward=reshard)
        return forward

    def gradient_sync(self, model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        if isinstance(model, FSDPModule):
            model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()


def build_distributed_strategy(
    config: ParallelismConfig, world: World, device: torch.device
) -> Parallelism:
    """DDP (``auto`` or ``ddp``), FSDP2 (``fsdp``), tensor parallelism (``tensor``) or
    pipeline stages (``pipeline``) for this rank of a torchrun job."""
    if config.strategy == "tensor":
        from seqlab.distributed.tensor_parallel import TensorParallel

        return TensorParallel(config, world, device)
    if config.strategy == "fsdp":
        return FullyShardedDataParallel(config, world, device)
    if config.strategy == "pipeline":
        from seqlab.distributed.pipeline_parallel import PipelineParallel

        return PipelineParallel(config, world, device)
    return DataParallel(config, world, device)
