"""Wraps a task for data-parallel (DDP) or fully sharded (FSDP2) training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from seqlab.core.nested_map import NestedMap
from seqlab.distributed.config import DistributedConfig
from seqlab.models.base import Metrics, Task


class TrainingForward(nn.Module):
    """A task's ``compute_predictions`` and ``compute_loss`` behind ``forward()``.

    DDP prepares its gradient all-reduce, and FSDP2 gathers the root's parameters, in hooks
    around ``forward()``; the Task contract has no forward of its own.
    """

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: NestedMap) -> tuple[torch.Tensor, Metrics]:
        predictions = self.task.compute_predictions(batch)
        return self.task.compute_loss(batch, predictions)


def wrap_for_training(task: Task, config: DistributedConfig) -> nn.Module:
    """The module to call for training steps; ``task`` keeps its parameters (DDP) or holds
    shards of them (FSDP2), so ``task.state_dict()`` keys are unchanged.

    FSDP2 makes each module held in an ``nn.ModuleList`` (e.g. each Transformer layer) a
    unit of its own, gathered just before its forward, and the rest (embeddings, final norms)
    one root unit.
    """
    forward = TrainingForward(task)
    if config.strategy == "ddp":
        device_ids: Any = None
        if torch.cuda.is_available():
            device_ids = [torch.cuda.current_device()]
        return DistributedDataParallel(forward, device_ids=device_ids)
    if config.strategy == "fsdp":
        for module in task.modules():
            if isinstance(module, nn.ModuleList):
                for layer in module:
                    fully_shard(layer, reshard_after_forward=config.fsdp_reshard_after_forward)
        fully_shard(forward, reshard_after_forward=config.fsdp_reshard_after_forward)
        return forward
    config.validate()
    raise AssertionError("unreachable")
