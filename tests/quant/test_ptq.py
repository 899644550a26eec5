"""Post-training dynamic int8: outputs within tolerance of fp32, with either backend."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlab.core.registry import get_experiment
from seqlab.quant.fake_quantized_linear import FakeQuantizedLinear
from seqlab.quant.int8_logits_embedding import Int8LogitsTokenEmbedding
from seqlab.quant.ptq import check_quantize_mode, quantize_int8
from seqlab.quant.qat import QuantizationConfig, set_quantization_step


def is_float_linear(module: nn.Module) -> bool:
    """An nn.Linear whose weight is a plain float tensor (torchao swaps the weight's class)."""
    return type(module) is nn.Linear and type(module.weight) is nn.Parameter


@pytest.mark.parametrize("exportable", [False, True], ids=["torch.ao", "torchao"])
def test_int8_log_probs_stay_within_tolerance_of_fp32(
    exportable: bool, tiny_mt, tiny_batch, log_probs
) -> None:
    task = tiny_mt(QuantizationConfig())
    task.eval()
    batch = tiny_batch
    expected = log_probs(task, batch)
    quantized = quantize_int8(task, exportable=exportable)
    assert not any(is_float_linear(m) for m in quantized.modules())
    assert any(is_float_linear(m) for m in task.modules())  # the input is left alone
    # The eager copy also projects onto the vocabulary in int8; the exportable one keeps
    # that projection float.
    assert isinstance(quantized.embedding, Int8LogitsTokenEmbedding) != exportable
    assert quantized.embedding.weight is not task.embedding.weight  # a copy, equal
    assert torch.equal(quantized.embedding.weight, task.embedding.weight)
    got = log_probs(quantized, batch)
    difference = (got - expected).abs()
    assert 0 < difference.max() < 0.25, difference.max()
    real = batch.tgt_paddings == 0
    assert (got.argmax(-1) == expected.argmax(-1))[real].float().mean() >= 0.9


def test_int8_output_projection_is_the_embedding_matrix_quantized(tiny_mt) -> None:
    embedding = tiny_mt(QuantizationConfig()).embedding
    quantized = Int8LogitsTokenEmbedding(embedding)
    x = torch.randn(2, 3, embedding.config.model_dim)
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), embedding(ids))  # lookups stay float
        expected, got = embedding.logits(x), quantized.logits(x)
    assert not torch.equal(got, expected)
    # int8 rounding of weights (per row) and inputs: about 1% of the logits' scale.
    assert (got - expected).abs().max() < 0.03 * expected.abs().max()


def test_a_qat_model_is_folded_before_quantizing(
    tiny_mt, tiny_batch, log_probs, qat_config: QuantizationConfig
) -> None:
    task = tiny_mt(qat_config)
    set_quantization_step(task, 6)
    quantized = quantize_int8(task)
    assert not any(isinstance(m, FakeQuantizedLinear) for m in quantized.modules())
    assert any(isinstance(m, FakeQuantizedLinear) for m in task.modules())
    assert torch.isfinite(log_probs(quantized, tiny_batch)).all()


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'none', 'int8'"):
        check_quantize_mode("int4")


def test_lstm_projections_read_directly_stay_float(tiny_batch, log_probs) -> None:
    torch.manual_seed(0)
    task = get_experiment("mt.bible_en_es.rnmt_tiny").task.build().eval()
    expected = log_probs(task, tiny_batch)
    for exportable in (False, True):
        quantized = quantize_int8(task, exportable=exportable)
        cells = [m for m in quantized.modules() if type(m).__name__ == "LSTMCell"]
        assert cells and all(is_float_linear(c.recurrent_proj) for c in cells)
        num_float = sum(is_float_linear(m) for m in quantized.modules())
        assert 0 < num_float < sum(is_float_linear(m) for m in task.modules())
        difference = (log_probs(quantized, tiny_batch) - expected).abs().max()
        assert 0 < difference < 0.25
