"""Config of how parameters are replicated across processes (``trainer.distributed``)."""

from __future__ import annotations

import dataclasses

from seqlab.core.config import Config, param

STRATEGIES = ("auto", "none", "ddp", "fsdp")
BACKENDS = ("auto", "gloo", "nccl")


@dataclasses.dataclass
class ParallelismConfig(Config):
    """The parallelism strategy of the training loop, and its process group under torchrun."""

    strategy: str = param(
        "auto",
        doc="auto (none in one process, ddp under torchrun), none (one process), ddp "
        "(DistributedDataParallel: full replica per process) or fsdp (FSDP2 fully_shard: "
        "parameters, gradients and optimizer state sharded across processes).",
    )
    backend: str = param(
        "auto", doc="Process-group backend: auto (nccl on CUDA devices, else gloo), gloo or nccl."
    )
    timeout_seconds: float = param(
        600.0, doc="A collective waiting longer than this fails the job instead of hanging."
    )
    fsdp_reshard_after_forward: bool = param(
        True,
        doc="FSDP2: free gathered parameters after forward (less memory, one more "
        "all-gather in backward).",
    )

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"trainer.distributed.strategy {self.strategy!r}; expected one of {STRATEGIES}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(
                f"trainer.distributed.backend {self.backend!r}; expected one of {BACKENDS}"
            )
        if self.timeout_seconds <= 0:
            raise ValueError(
                f"trainer.distributed.timeout_seconds must be > 0, got {self.timeout_seconds}"
            )
