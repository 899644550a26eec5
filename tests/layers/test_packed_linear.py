"""Tests for seqlab.layers.packed_linear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import EOS_ID
from seqlab.layers.packed_linear import (
    PackedLinear,
    PackedLogitsTokenEmbedding,
    pack_linear_layers,
    packing_available,
)
from seqlab.layers.transformer import decoder_config, encoder_config
from seqlab.models.mt.transformer_model import TransformerMT

pytestmark = pytest.mark.skipif(not packing_available(), reason="PyTorch built without oneDNN")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 24), (3, 4, 24), (1, 1, 24)], ids=["2d", "3d", "one"])
def test_packed_linear_matches_linear(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(24, 40, bias=bias)
    packed = PackedLinear(linear, expected_rows=4)
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), linear(x), atol=1e-5, rtol=1e-5)
    assert packed.weight is linear.weight  # shared, not copied


def test_packed_linear_rejects_other_dtypes() -> None:
    with pytest.raises(ValueError, match="float32"):
        PackedLinear(nn.Linear(4, 4).to(torch.float64))


def _task() -> TransformerMT:
    torch.manual_seed(0)
    config = TransformerMT.Config()
    config.embedding.vocab_size, config.embedding.model_dim = 40, 16
    config.positions.model_dim = 16
    config.encoder = encoder_config(num_layers=2, model_dim=16, num_heads=2, hidden_dim=32)
    config.decoder = decoder_config(num_layers=2, model_dim=16, num_heads=2, hidden_dim=32)
    config.beam_search.max_decode_length_offset = 6
    return config.build()


def test_packed_copy_decodes_like_the_model() -> None:
    task = _task().eval()
    packed = pack_linear_layers(task, expected_rows=8)
    # Every exact nn.Linear of the copy is packed; the model itself is untouched.
    assert not any(type(m) is nn.Linear for m in packed.modules())
    assert any(isinstance(m, PackedLinear) for m in packed.modules())
    assert not any(isinstance(m, PackedLinear) for m in task.modules())
    # The shared embedding stays one module, whose output projection is packed too.
    assert isinstance(packed.embedding, PackedLogitsTokenEmbedding)
    assert packed.embedding.weight is packed.embedding.packed_projection.weight
    torch.manual_seed(1)
    src_ids = torch.randint(4, 40, (3, 7))
    src_ids[:, -1] = EOS_ID
    src_paddings = torch.zeros(3, 7)
    src_paddings[1, 5:] = 1.0
    batch = NestedMap(src_ids=src_ids, src_paddings=src_paddings)
    with torch.no_grad():
        expected, got = task.decode(batch), packed.decode(batch)
        logits = task.compute_predictions(
            NestedMap(batch, tgt_in_ids=src_ids, tgt_paddings=src_paddings)
        ).logits
        packed_logits = packed.compute_predictions(
            NestedMap(batch, tgt_in_ids=src_ids, tgt_paddings=src_paddings)
        ).logits
    assert got.ids == expected.ids
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed_logits, logits, atol=1e-4, rtol=1e-4)


def test_a_packed_model_copies_and_packs_again() -> None:
    """decode_dataset packs whatever task it gets, e.g. a Predictor's, already packed."""
    task = _task().eval()
    packed = pack_linear_layers(task, expected_rows=8)
    twice = pack_linear_layers(packed, expected_rows=8)
    assert sum(isinstance(m, PackedLinear) for m in twice.modules()) == sum(
        isinstance(m, PackedLinear) for m in packed.modules()
    )
    torch.manual_seed(1)
    src_ids = torch.randint(4, 40, (2, 6))
    src_ids[:, -1] = EOS_ID
    batch = NestedMap(src_ids=src_ids, src_paddings=torch.zeros(2, 6))
    with torch.no_grad():
        assert twice.decode(batch).ids == task.decode(batch).ids


def test_packing_leaves_the_random_stream_alone() -> None:
    """A training run decodes between steps through a packed copy; its random stream (and so
    bitwise resume) must not depend on that."""
    task = _task().eval()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    pack_linear_layers(task, expected_rows=8)
    assert torch.equal(torch.rand(4), expected)
