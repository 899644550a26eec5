"""Strategy ``tensor``: Megatron-style tensor parallelism over the ``tensor`` dimension of a
(data x tensor) ``DeviceMesh``: the processes of a model group of ``trainer.distributed.mesh``
(all of them by default) split each layer, and the groups train on different examples.

Each ``MultiHeadAttention`` projects queries and keys/values column-wise (each rank computes
its own heads) and its output row-wise (partial sums all-reduced); each ``FeedForward``
splits its first layer column-wise and its second row-wise. So a layer all-reduces twice in
forward and twice in backward, and each rank holds 1/degree of those weights and of their
optimizer state. The token embedding, output projection and cross entropy of TransformerMT
and TransformerLM are split by vocabulary (seqlab.distributed.vocab_parallel). Norms and
positions stay replicated: every rank computes them whole, on the same batch, and gets the
same gradients for them.

The layers know nothing of this: ``torch.distributed.tensor.parallel.parallelize_module``
turns their weights into DTensor shards from outside, and an attention's ``num_heads`` is set
to its local head count, as torchtitan does.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)
from torch.distributed.tensor.placement_types import _StridedShard

from seqlab.core.config import Config, ConfigError
from seqlab.data.data_sharding import shard_indices
from seqlab.distributed.process_group import average_over, model_parallel_mesh
from seqlab.distributed.strategies import GatheredReplicaEvaluation
from seqlab.distributed.vocab_parallel import split_vocabulary
from seqlab.layers.attention import MultiHeadAttention
from seqlab.layers.feed_forward import FeedForward
from seqlab.models.base import Task
from seqlab.models.lm.transformer_lm import TransformerLM
from seqlab.models.mt.transformer_model import TransformerMT
from seqlab.train.parallelism import TrainingForward
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.world import World


class _LocalFusedLinear(nn.Linear):
    """A linear layer whose output is blocks side by side (``MultiHeadAttention``'s
    ``key_value_proj``: [keys | values]), split column-wise so that each rank holds its slice
    of every block and outputs [its keys | its values]: ``chunk(2)`` still splits keys from
    values. DTensor's matmul would gather such strided shards into contiguous ones, so the
    product is taken on the local shards; the input's gradient is summed over ranks."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        mesh = self.weight.device_mesh
        replicated = DTensor.from_local(inputs, mesh, [Replicate()], run_check=False)
        # Each rank's input gradient covers only its columns: summed (all-reduced) in backward.
        local_inputs = replicated.to_local(grad_placements=[Partial()])
        bias = None if self.bias is None else self.bias.to_local()
        return nn.functional.linear(local_inputs, self.weight.to_local(), bias)


class _FusedColwiseParallel(ParallelStyle):
    """Column-wise split of a linear layer whose output is ``num_parts`` blocks side by side
    (see ``_LocalFusedLinear``)."""

    def __init__(self, num_parts: int) -> None:
        super().__init__()
        self.num_parts = num_parts

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        if type(module) is not nn.Linear:
            raise TypeError(f"a fused column-wise split needs an nn.Linear, not {type(module)}")
        placement = [_StridedShard(0, split_factor=self.num_parts)]
        for name, param in list(module.named_parameters()):
            sharded = nn.Parameter(distribute_tensor(param.data, device_mesh, placement))
            module.register_parameter(name, sharded)
        module.__class__ = _LocalFusedLinear  # same parameters and names, local product
        return module


def check_tensor_parallel(task: Config, degree: int) -> None:
    """Refuses, in one line naming the key, a model that ``degree`` ranks cannot split: heads
    or feed-forward widths not divisible by the degree, attention positions with weights
    (Shaw's embeddings and T5's biases take gradients from every head; rotary positions have
    none and work on each head alone)."""
    vocab_size = task.embedding.vocab_size if _splits_vocabulary(task) else 0
    if vocab_size % degree:
        raise _indivisible("task.embedding.vocab_size", vocab_size, degree)
    for key, node in _config_nodes(task, "task"):
        if isinstance(node, MultiHeadAttention.Config):
            if node.num_heads % degree:
                raise _indivisible(f"{key}.num_heads", node.num_heads, degree)
            positions = node.relative_positions
            if positions is not None and any(True for _ in positions.build().parameters()):
                raise ConfigError(
                    f"trainer.distributed.strategy=tensor does not split attention positions "
                    f"with weights ({key}.relative_positions: {type(positions).__qualname__}); "
                    f"use rotary positions, or strategy ddp or fsdp"
                )
        if isinstance(node, FeedForward.Config) and node.hidden_dim % degree:
            raise _indivisible(f"{key}.hidden_dim", node.hidden_dim, degree)


def _indivisible(key: str, value: int, degree: int) -> ConfigError:
    return ConfigError(
        f"trainer.distributed.strategy=tensor: {key}={value} is not divisible by the "
        f"tensor-parallel degree {degree} (trainer.distributed.mesh's model degree, by default "
        f"the number of processes)"
    )


def _config_nodes(node: Any, key: str) -> list[tuple[str, Config]]:
    """Every Config in the tree under ``node`` with its dotted key, ``node`` first."""
    if isinstance(node, list | tuple):
        return [n for i, child in enumerate(node) for n in _config_nodes(child, f"{key}.{i}")]
    if isinstance(node, dict):
        return [n for k, child in node.items() for n in _config_nodes(child, f"{key}.{k}")]
    if not isinstance(node, Config):
        return []
    found = [(key, node)]
    for field in dataclasses.fields(node):
        found += _config_nodes(getattr(node, field.name), f"{key}.{field.name}")
    return found


def _splits_vocabulary(task: Any) -> bool:
    """Whether ``task`` (a model or its config) is one whose logits come from its shared
    token embedding and feed only its loss, so that both can be split by vocabulary."""
    return isinstance(
        task, TransformerMT | TransformerMT.Config | TransformerLM | TransformerLM.Config
    )


def parallelize_task(task: Task, mesh: DeviceMesh) -> None:
    """Splits every attention and feed-forward block of ``task`` over ``mesh``, and its
    embedding, output projection and loss by vocabulary where they allow it; in place."""
    degree = mesh.size()
    if _splits_vocabulary(task):
        split_vocabulary(task.embedding, task.loss, mesh)
    for module in task.modules():
        if isinstance(module, MultiHeadAttention):
            plan = {
                "query_proj": ColwiseParallel(),
                "key_value_proj": _FusedColwiseParallel(num_parts=2),
                "output_proj": RowwiseParallel(),
            }
            parallelize_module(module, mesh, plan)
            module.num_heads //= degree  # [B, T, D / degree] reshapes to the local heads
        elif isinstance(module, FeedForward):
            plan = {"input_proj": ColwiseParallel(), "output_proj": RowwiseParallel()}
            parallelize_module(module, mesh, plan)


def _is_strided(value: Any) -> bool:
    return isinstance(value, DTensor) and any(
        isinstance(p, _StridedShard) for p in value.placements
    )


def _map_tensors(tree: Any, fn: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    return fn(tree)


class TensorParallel(GatheredReplicaEvaluation):
    """Strategy ``tensor``: the ranks form a (data x tensor) mesh. The ranks of a tensor
    group (consecutive ranks, ``mesh``'s model degree of them) split each layer and train on the
    same examples; the groups split each global batch as DDP's ranks do, and average their
    gradients after the last micro-batch."""

    name = "tensor"

    def __init__(self, config: ParallelismConfig, world: World, device: torch.device) -> None:
        super().__init__(config, world, device)
        mesh = model_parallel_mesh(config, world, device, "tensor")
        self.mesh, self.data_mesh = mesh["tensor"], mesh["data"]
        self._foreach: list[bool | None] | None = None  # the optimizer's, as configured

    @property
    def data_parallel_size(self) -> int:
        return self.data_mesh.size()

    @property
    def data_parallel_rank(self) -> int:
        return self.data_mesh.get_local_rank()

    def wrap(self, task: Task) -> nn.Module:
        parallelize_task(task, self.mesh)
        return TrainingForward(task)

    def prepare_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Per-parameter updates: torch's multi-tensor (foreach) kernels refuse a list that
        mixes DTensor shards and the replicated layers' plain tensors. Checkpoints keep the
        configured setting, for the layouts that can use it."""
        if self._foreach is None:
            self._foreach = [group.get("foreach") for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            if "foreach" in group:
                group["foreach"] = False

    def load(
        self, directory: Path, task: Task, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        found = super().load(directory, task, optimizer)
        self.prepare_optimizer(optimizer)  # a checkpoint's param groups may say foreach
        return found

    def local_indices(self, global_indices: Sequence[int]) -> list[int]:
        return shard_indices(global_indices, self.data_parallel_rank, self.data_parallel_size)

    def sum_over_data(self, values: torch.Tensor) -> torch.Tensor:
        if self.data_parallel_size > 1:  # (a tensor group's ranks have the same examples)
            dist.all_reduce(values, group=self.data_mesh.get_group())
        return values

    @contextlib.contextmanager
    def gradient_sync(self, model: nn.Module, last: bool) -> Iterator[None]:
        """After the last micro-batch's backward, averages each rank's gradient shards with
        those of the same shards in the other tensor groups (one all-reduce of them all)."""
        yield
        if not last or self.data_parallel_size == 1:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
        average_over(local, self.data_mesh.get_group())

    # DCP stores a tensor as contiguous blocks; a fused projection's strided shards are
    # written whole and split again on load (each a few MB even for large models).
    def _state(self, task: Task, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        model, optimizer_state = get_state_dict(task, optimizer)
        for group, foreach in zip(
            optimizer_state["param_groups"], self._foreach or [], strict=False
        ):
            group["foreach"] = foreach  # as configured (prepare_optimizer turned it off)
        state = {"model": model, "optimizer": optimizer_state}
        return _map_tensors(state, lambda v: v.full_tensor() if _is_strided(v) else v)

    def _set_state(
        self, task: Task, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        model, optimizer_state = get_state_dict(task, optimizer)
        sharded = {"model": model, "optimizer": optimizer_state}

        def restride(loaded: Any, current: Any) -> Any:
            if isinstance(loaded, dict):
                return {k: restride(v, current[k]) for k, v in loaded.items()}
            if _is_strided(current):
                return distribute_tensor(loaded, current.device_mesh, current.placements)
            return loaded

        state = restride(state, sharded)
        set_state_dict(
            task, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
