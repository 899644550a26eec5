"""Config of how parameters are replicated across processes (``trainer.distributed``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from seqlab.core.config import Config, ConfigError, param

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
        "(attention heads and feed-forward widths split across the processes of a model "
        "group, see mesh) or pipeline (the layers cut into one stage per process of a model "
        "group, micro-batches flowing through them).",
    )
    backend: Backend = param(
        "auto",
        doc="Process-group backend: auto (on CUDA devices nccl for CUDA tensors and gloo for "
        "CPU ones, else gloo), gloo or nccl (CUDA tensors only).",
    )
    timeout_seconds: float = param(
        600.0,
        doc="A collective waiting longer than this fails the job instead of hanging.",
        above=0,
    )
    mesh: tuple[int, ...] = param(
        (),
        doc="strategy=tensor or pipeline: [data, model], the degrees of the job's 2-D process "
        "mesh (their product is the number of processes): data groups of model consecutive "
        "ranks; the ranks of a group split the model (tensor: each layer; pipeline: into "
        "model stages) and train on the same examples, the groups train on different "
        "examples and average their gradients as DDP does. Empty: one group of all processes.",
    )
    fsdp_reshard_after_forward: bool = param(
        True,
        doc="FSDP2: free gathered parameters after forward (less memory, one more "
        "all-gather in backward).",
    )
    pipeline_microbatches: int = param(
        4,
        doc="Pipeline: micro-batches each pipeline's slice of a global batch is split into (at "
        "least the number of stages).",
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

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Configs written before ``mesh`` had ``tensor_degree`` (0: one group of all
        processes, which an empty ``mesh`` means too)."""
        if "tensor_degree" not in data:
            return data
        degree = data.pop("tensor_degree")
        if degree:
            raise ConfigError(
                f"trainer.distributed.tensor_degree={degree} (a config from before "
                f'trainer.distributed.mesh): replace it by "mesh": [D, {degree}] in the run\'s '
                "config.json, D = processes / tensor_degree"
            )
        return data

    def mesh_shape(self, world_size: int) -> tuple[int, int]:
        """(data, model) degrees of a job of ``world_size`` processes: ``mesh``, or (1,
        world_size) when it is empty.

        Raises:
          ConfigError: naming the key, when ``mesh`` is not two degrees whose product is
            ``world_size``.
        """
        key = f"trainer.distributed.mesh={list(self.mesh)}"
        if not self.mesh:
            return 1, world_size
        if len(self.mesh) != 2 or min(self.mesh) < 1:
            raise ConfigError(
                f"{key}: give two degrees [data, model] of at least 1, or leave it empty for "
                f"one model-parallel group of all processes"
            )
        data, model = self.mesh
        if data * model != world_size:
            raise ConfigError(
                f"{key} makes {data * model} processes, but the job has {world_size}; give "
                f"degrees whose product is {world_size}"
            )
        return data, model
