"""The gradient norm and clipping of the training step, over plain tensors and DTensor shards
(FSDP2, tensor parallelism) together.

torch's foreach kernels refuse a list that mixes the two, and a tensor-parallel model has
both: its split linear layers' gradients are DTensors, its norms' and embeddings' are plain.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributed.tensor import DTensor


def _split(items: Sequence[torch.Tensor], is_sharded: list[bool]) -> list[list[torch.Tensor]]:
    """(plain, sharded) groups of ``items``, empty groups left out."""
    groups = [
        [x for x, s in zip(items, is_sharded, strict=True) if not s],
        [x for x, s in zip(items, is_sharded, strict=True) if s],
    ]
    return [group for group in groups if group]


def gradient_norm(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """The L2 norm of all of ``params``' gradients together (a DTensor's whole tensor counted
    once), the same on every rank."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = [
        torch.nn.utils.get_total_norm(group)
        for group in _split(grads, [isinstance(g, DTensor) for g in grads])
    ]
    norms = [n.full_tensor() if isinstance(n, DTensor) else n for n in norms]
    if len(norms) == 1:
        return norms[0]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def clip_gradients_(params: Sequence[nn.Parameter], max_norm: float, norm: torch.Tensor) -> None:
    """Scales ``params``' gradients by ``max_norm / norm`` where that is below 1."""
    params = [p for p in params if p.grad is not None]
    for group in _split(params, [isinstance(p.grad, DTensor) for p in params]):
        torch.nn.utils.clip_grads_with_norm_(group, max_norm, norm)
