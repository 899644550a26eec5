"""Config of how parameters are replicated across processes (``trainer.distributed``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from seqlab.core.config import Config, param

Strategy = Literal["auto", "none", "ddp", "fsdp", "tensor"]
Backend = Literal["auto", "gloo", "nccl"]


@dataclasses.dataclass
class ParallelismConfig(Config):
    """The parallelism strategy of the training loop, and its process group under torchrun."""

    strategy: Strategy = param(
        "auto",
        doc="auto (none in one process, ddp under torchrun), none (one process), ddp "
        "(DistributedDataParallel: full replica per process), fsdp (FSDP2 fully_shard: "
        "parameters, gradients and optimizer state sharded across processes) or tensor "
        "(attention heads and feed-forward widths split across processes, each on the whole "
        "batch).",
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
