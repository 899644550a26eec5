"""Convolutional subsampling: shapes, 4x lengths, padding invariance, gradients."""

from __future__ import annotations

import torch

from seqlab.core.layer import lengths_to_paddings
from seqlab.layers.conv_subsampling import ConvSubsampling


def _layer() -> ConvSubsampling:
    torch.manual_seed(0)
    return ConvSubsampling.Config(input_dim=20, num_channels=8, output_dim=16).build().eval()


def test_shapes_and_lengths() -> None:
    layer = _layer()
    lengths = torch.tensor([37, 36, 5, 1])
    out, paddings = layer(torch.randn(4, 37, 20), lengths_to_paddings(lengths, 37))
    assert out.shape == (4, 10, 16)
    assert (1 - paddings).sum(dim=1).tolist() == [10, 9, 2, 1]  # ceil(ceil(n / 2) / 2)
    assert torch.all(out[paddings.bool()] == 0)


def test_padding_invariance() -> None:
    layer = _layer()
    for length in (13, 14, 15, 16):
        x = torch.randn(1, length, 20)
        alone, alone_pad = layer(x, torch.zeros(1, length))
        padded = torch.randn(1, 31, 20) * 100
        padded[0, :length] = x[0]
        together, together_pad = layer(padded, lengths_to_paddings(torch.tensor([length]), 31))
        n = int((1 - alone_pad).sum())
        assert int((1 - together_pad).sum()) == n
        torch.testing.assert_close(together[0, :n], alone[0, :n])


def test_gradients_flow() -> None:
    layer = _layer().train()
    x = torch.randn(2, 24, 20, requires_grad=True)
    out, _ = layer(x, torch.zeros(2, 24))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in layer.parameters())
