"""Config of how parameters are replicated across processes (``trainer.distributed``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from seqlab.core.config import Config, param

Strategy = Literal["auto", "none", "ddp", "fsdp", "tensor", "pipeline"]
PipelineSchedule = Literal["gpipe", "1f1b"]
Backend = Literal["auto", "gloo", "nccl"]


@dataclasses.dataclass
class ParallelismConfig(Config):
    """The parallelism strategy of the training loop, and its process group under torchrun."""

    strategy: Strategy = param(
        "auto",
        doc="auto (none in one process, ddp under torchrun), none (one process), ddp "
        "(DistributedDataParallel: full replica per process), fsdp (FSDP2 fully_shard: "
        "parameters, gradients and optimizer state sharded across processes), tensor "
        "(attention heads and feed-forward widths split across processes, each on the whole "
        "batch) or pipeline (the layers cut into one stage per process, micro-batches flowing "
        "through them).",
    )
    backend: Backend = param(
        "auto", doc="Process-group backend: auto (nccl on CUDA devices, else gloo), gloo or nccl."
    )
    timeout_seconds: float = param(
        600.0,
        doc="A collective waiting longer than this fails the job instead of hanging.",
        above=0,
    )
    tensor_degree: int = param(
        0,
        doc="strategy=tensor: processes that split each layer (consecutive ranks); the job's "
        "processes form world_size / tensor_degree such groups, which train on different "
        "examples and average their gradients as DDP does. 0: all processes in one group.",
        at_least=0,
    )
    fsdp_reshard_after_forward: bool = param(
        True,
        doc="FSDP2: free gathered parameters after forward (less memory, one more "
        "all-gather in backward).",
    )
    pipeline_microbatches: int = param(
        4,
        doc="Pipeline: micro-batches each global batch is split into (at least the number of "
        "stages, i.e. processes).",
        at_least=1,
    )
    pipeline_schedule: PipelineSchedule = param(
        "1f1b",
        doc="Pipeline: gpipe (every micro-batch's forward, then every backward) or 1f1b (one "
        "forward, one backward in the steady state: fewer activations held).",
    )
    pipeline_boundaries: tuple[int, ...] = param(
        (),
        doc="Pipeline: the first layer of stages 1, 2, ... (one fewer than the stages, "
        "increasing); empty: the split whose largest stage holds the fewest parameters.",
    )
