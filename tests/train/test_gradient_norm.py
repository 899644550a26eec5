"""The gradient norm and clipping over plain tensors and DTensor shards together (a
tensor-parallel model has both)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from seqlab.train.gradient_norm import clip_gradients_, gradient_norm


@pytest.fixture()
def mesh() -> Iterator[object]:
    """A one-process gloo group and its mesh (DTensors need a process group)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_norm_and_clipping_cover_dtensor_and_plain_gradients_together(mesh: object) -> None:
    plain = nn.Parameter(torch.zeros(2))
    sharded = nn.Parameter(distribute_tensor(torch.zeros(2, 2), mesh, [Shard(0)]))
    unused = nn.Parameter(torch.zeros(1))  # no gradient: left out
    plain.grad = torch.tensor([3.0, 0.0])
    sharded.grad = distribute_tensor(torch.tensor([[0.0, 4.0], [0.0, 12.0]]), mesh, [Shard(0)])
    params = [plain, sharded, unused]
    norm = gradient_norm(params)
    assert not isinstance(norm, type(sharded.grad)) and float(norm) == pytest.approx(13.0)
    clip_gradients_(params, 1.3, norm)
    torch.testing.assert_close(plain.grad, torch.tensor([0.3, 0.0]))
    torch.testing.assert_close(sharded.grad.full_tensor(), torch.tensor([[0.0, 0.4], [0.0, 1.2]]))
    assert unused.grad is None


def test_plain_gradients_alone_give_torchs_norm_bitwise() -> None:
    params = [nn.Parameter(torch.randn(5)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn(5)
    expected = torch.nn.utils.get_total_norm([p.grad for p in params])
    assert torch.equal(gradient_norm(params), expected)
