"""The process group of a torchrun job: who this process is, and the few collectives the
trainer needs (all no-ops in a single process)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from seqlab.distributed.config import DistributedConfig


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job, as torchrun describes it in the environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and summaries and prints progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


def world_from_env() -> World:
    """The World from torchrun's RANK, WORLD_SIZE and LOCAL_RANK (one process if unset)."""
    world = World(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
    )
    if world.world_size < 1 or not 0 <= world.rank < world.world_size:
        raise ValueError(
            f"RANK={world.rank} WORLD_SIZE={world.world_size}: need 0 <= RANK < WORLD_SIZE"
        )
    return world


def _backend(config: DistributedConfig) -> str:
    if config.backend != "auto":
        return config.backend
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(config: DistributedConfig) -> World:
    """Joins the job's process group (once); returns this process's World.

    The group's timeout bounds every collective, so a rank that hangs (rather than dies, which
    torchrun notices by itself) fails the job after ``config.timeout_seconds``.
    """
    config.validate()
    world = world_from_env()
    if world.is_distributed and not dist.is_initialized():
        dist.init_process_group(
            backend=_backend(config),
            timeout=datetime.timedelta(seconds=config.timeout_seconds),
        )
    return world


def all_reduce(values: torch.Tensor, world: World, op: str = "sum") -> torch.Tensor:
    """Reduces ``values`` in place over all ranks (``op``: sum or max); returns it."""
    if world.is_distributed:
        reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
        dist.all_reduce(values, op=reduce_op)
    return values


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


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Runs the body on rank 0, then on the other ranks.

    For work that fills shared caches (corpus preparation, tokenizer training): the other
    ranks then find the files made instead of racing to write them.
    """
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
