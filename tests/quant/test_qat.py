"""QAT as a rewrite: configs and built models swap Linear layers for fake-quantized ones; outputs
are unchanged before clipping and change only within quantization error once quantizing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from seqlab.core.config import Config, ConfigError, param
from seqlab.core.registry import get_experiment
from seqlab.layers.linear import Linear
from seqlab.quant.fake_quantized_linear import FakeQuantizedLinear
from seqlab.quant.qat import (
    QuantizationConfig,
    build_task,
    rewrite_config,
    set_quantization_step,
    strip_fake_quantization,
)


@dataclasses.dataclass
class _TwoProjections(Config):
    first: Linear.Config = param(Linear.Config(input_dim=4, output_dim=8), doc="A projection.")
    named: dict[str, Linear.Config] = param(
        {"second": Linear.Config(input_dim=8, output_dim=2, bias=False)}, doc="More of them."
    )
    width: int = param(3, doc="Not a layer.")


def test_rewrite_config_swaps_every_linear_config_and_keeps_shapes(
    qat_config: QuantizationConfig,
) -> None:
    config = _TwoProjections()
    rewritten = rewrite_config(config, qat_config)
    assert isinstance(rewritten, _TwoProjections)
    assert isinstance(rewritten.first, FakeQuantizedLinear.Config)
    assert (rewritten.first.input_dim, rewritten.first.output_dim) == (4, 8)
    second = rewritten.named["second"]
    assert isinstance(second, FakeQuantizedLinear.Config) and second.bias is False
    assert second.schedule == qat_config.schedule and second.activations.bits == 8
    assert isinstance(config.first, Linear.Config)  # the input is not modified
    assert rewrite_config(config, QuantizationConfig()) == config


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ConfigError, match="quant.mode"):
        rewrite_config(_TwoProjections(), QuantizationConfig(mode="int4"))  # type: ignore[arg-type]


def test_build_task_swaps_all_linear_modules_with_the_same_parameters(
    tiny_mt, qat_config: QuantizationConfig
) -> None:
    plain, qat = tiny_mt(QuantizationConfig()), tiny_mt(qat_config)
    assert not any(type(m) is nn.Linear for m in qat.modules())
    num_fake = sum(isinstance(m, FakeQuantizedLinear) for m in qat.modules())
    assert num_fake == sum(type(m) is nn.Linear for m in plain.modules()) > 0
    plain_state, qat_state = plain.state_dict(), qat.state_dict()
    for name, value in plain_state.items():
        torch.testing.assert_close(qat_state[name], value, rtol=0, atol=0)
    assert set(qat_state) - set(plain_state)  # plus steps and EMA ranges


def test_qat_changes_outputs_only_within_quantization_error(
    tiny_mt, tiny_batch, log_probs, qat_config: QuantizationConfig
) -> None:
    plain, qat = tiny_mt(QuantizationConfig()), tiny_mt(qat_config)
    plain.eval()
    batch = tiny_batch
    expected = log_probs(plain, batch)
    qat.eval()
    set_quantization_step(qat, 1)  # before clipping: identical
    torch.testing.assert_close(log_probs(qat, batch), expected, rtol=0, atol=0)
    qat.train()
    qat.compute_predictions(batch)  # observe input ranges (dropout does not matter here)
    qat.eval()
    set_quantization_step(qat, 6)  # clipped to 4.0 (touches nothing here) and quantized
    quantized = log_probs(qat, batch)
    difference = (quantized - expected).abs()
    assert difference.max() > 0
    assert difference.max() < 0.25, difference.max()
    real = batch.tgt_paddings == 0
    agreement = (quantized.argmax(-1) == expected.argmax(-1))[real].float().mean()
    assert agreement >= 0.9


def test_strip_fake_quantization_folds_the_weights_into_plain_linears(
    tiny_mt, tiny_batch, log_probs, qat_config: QuantizationConfig
) -> None:
    qat = tiny_mt(qat_config)
    qat.eval()
    set_quantization_step(qat, 3)  # clipping phase: no input rounding, so outputs agree
    batch = tiny_batch
    expected = log_probs(qat, batch)
    strip_fake_quantization(qat)
    assert not any(isinstance(m, FakeQuantizedLinear) for m in qat.modules())
    torch.testing.assert_close(log_probs(qat, batch), expected)


def test_lstm_gate_projections_are_fake_quantized_weights_and_inputs(
    tiny_batch, qat_config: QuantizationConfig
) -> None:
    torch.manual_seed(0)
    task = build_task(get_experiment("mt.bible_en_es.rnmt_tiny").task, qat_config)
    cell = next(m for m in task.modules() if type(m).__name__ == "LSTMCell")
    projections = (cell.input_proj, cell.recurrent_proj)
    assert all(isinstance(p, FakeQuantizedLinear) for p in projections)
    assert "recurrent_proj.weight" in dict(cell.named_parameters())
    set_quantization_step(task, 6)
    for projection in projections:
        weight = projection.weight  # the weight the gates are computed with
        levels = weight / (weight.abs().amax(dim=1, keepdim=True) / 127)
        torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
        assert not torch.equal(weight, projection.float_weight)
    task.train()
    task.compute_loss(tiny_batch, task.compute_predictions(tiny_batch))[0].backward()
    for projection in projections:
        assert projection.float_weight.grad is not None
        # The cell calls its projections as modules, so their inputs' ranges are observed.
        assert bool(projection.activations.observed)
