"""The Linear layer: same math and parameter names as torch.nn.Linear."""

from __future__ import annotations

import torch
from torch import nn

from seqlab.layers.linear import Linear


def test_linear_matches_torch_linear_and_shares_its_state_dict() -> None:
    torch.manual_seed(0)
    layer = Linear.Config(input_dim=6, output_dim=4).build()
    reference = nn.Linear(6, 4)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 6, requires_grad=True)
    torch.testing.assert_close(layer(x), reference(x))
    layer(x).sum().backward()
    assert layer.weight.grad is not None and x.grad is not None
    assert Linear.Config(input_dim=6, output_dim=4, bias=False).build().bias is None
