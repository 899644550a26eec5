"""The process group of a torchrun job: who this process is, and the few collectives the
trainer needs (all no-ops in a single process)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from seqlab.train.device import CPU
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.world import World, world_from_env


def _backend(config: ParallelismConfig, device: torch.device) -> str:
    if config.backend != "auto":
        return config.backend
    # NCCL reduces CUDA tensors only: the loop's CPU scalars (metrics, counts) go through gloo.
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_process_group(config: ParallelismConfig, device: torch.device = CPU) -> World:
    """Joins the job's process group (once; on a CUDA ``device`` NCCL for CUDA tensors and
    gloo for CPU ones, else gloo); returns this process's World.

    The group's timeout bounds every collective, so a rank that hangs (rather than dies, which
    torchrun notices by itself) fails the job after ``config.timeout_seconds``.
    """
    config.validate("trainer.distributed.")
    world = world_from_env()
    if world.is_distributed and not dist.is_initialized():
        dist.init_process_group(
            backend=_backend(config, device),
            timeout=datetime.timedelta(seconds=config.timeout_seconds),
        )
    return world


def all_reduce(values: torch.Tensor, world: World, op: str = "sum") -> torch.Tensor:
    """Reduces ``values`` in place over all ranks (``op``: sum or max); returns it."""
    if world.is_distributed:
        reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
        dist.all_reduce(values, op=reduce_op)
    return values


def average_over(tensors: Sequence[torch.Tensor], group: dist.ProcessGroup) -> None:
    """Averages each of ``tensors`` (plain local tensors, e.g. gradients) over the ranks of
    ``group``, in place, with one all-reduce of them all flattened."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, group=group)
    flat.div_(dist.get_world_size(group))
    for t, averaged in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(averaged.view_as(t))


def model_parallel_mesh(
    config: ParallelismConfig, world: World, device: torch.device, model_dim: str
) -> DeviceMesh:
    """The job's (data x ``model_dim``) ``DeviceMesh`` of ``config.mesh``'s degrees: ranks
    ``d * model + m``, the consecutive ranks of a row forming one model group."""
    shape = config.mesh_shape(world.world_size)
    return init_device_mesh(device.type, shape, mesh_dim_names=("data", model_dim))


def barrier(world: World) -> None:
    if world.is_distributed:
        dist.barrier()


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (pickled between our own processes only)."""
    if not world.is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any, world: World) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not world.is_distributed:
        return [value]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, value)
    return out


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
