"""Conformer block and encoder: shapes, padding invariance, norms, state dict, gradients."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.core.layer import lengths_to_paddings
from seqlab.layers.conformer import ConformerEncoder, ConformerLayer, conformer_encoder_config


def _encoder(norm: str = "batch_norm") -> ConformerEncoder:
    torch.manual_seed(0)
    config = conformer_encoder_config(
        num_layers=2, model_dim=16, num_heads=2, ffn_hidden_dim=32, kernel_size=5,
        dropout_prob=0.0, conv_norm=norm,
    )  # fmt: skip
    return config.build()


@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm"])
@pytest.mark.parametrize("training", [False, True])
def test_padding_invariance(norm: str, training: bool) -> None:
    encoder = _encoder(norm).train(training)
    lengths = torch.tensor([7, 11])
    x = torch.randn(2, 11, 16)
    paddings = lengths_to_paddings(lengths, 11)
    reference = encoder(x, paddings)
    garbage = x.clone()
    garbage[0, 7:] = torch.randn(4, 16) * 50
    longer = torch.cat([garbage, torch.randn(2, 5, 16) * 50], dim=1)
    out = encoder(longer, lengths_to_paddings(lengths, 16))
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[row, :n], reference[row, :n], atol=1e-5, rtol=1e-4)
    assert torch.all(out[0, 7:] == 0)


def test_batch_norm_running_stats_in_eval() -> None:
    encoder = _encoder()
    x, paddings = torch.randn(3, 9, 16), torch.zeros(3, 9)
    encoder.train()(x, paddings)
    norm = encoder.layers[0].convolution.norm
    assert not torch.equal(norm.running_mean, torch.zeros(16))
    encoder.eval()
    torch.testing.assert_close(encoder(x[:1], paddings[:1]), encoder(x, paddings)[:1])


def test_state_dict_round_trip_and_gradients() -> None:
    encoder = _encoder().train()
    x = torch.randn(2, 6, 16, requires_grad=True)
    encoder(x, torch.zeros(2, 6)).pow(2).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    copy = _encoder()
    copy.load_state_dict(encoder.state_dict())
    encoder.eval()
    copy.eval()
    torch.testing.assert_close(copy(x, torch.zeros(2, 6)), encoder(x, torch.zeros(2, 6)))


def test_mismatched_dims_are_refused() -> None:
    config = ConformerLayer.Config(model_dim=32)
    with pytest.raises(ConfigError, match="ffn_start.model_dim"):
        config.build()
