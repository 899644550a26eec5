"""Both language models: packing never lets a segment see another, incremental decoding
equals the full forward pass, and the perplexity metrics are exact."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.core.nested_map import NestedMap
from seqlab.data.sequence_packing import segment_layout
from seqlab.experiments.lm.bible_en import lstm_lm_config, transformer_lm_config
from seqlab.models.lm.language_model import LanguageModel

VOCAB = 50


def _models() -> dict[str, LanguageModel]:
    torch.manual_seed(0)
    return {
        "transformer": transformer_lm_config(
            vocab_size=VOCAB,
            num_layers=2,
            model_dim=32,
            hidden_dim=64,
            num_heads=4,
            dropout_prob=0.0,
        ).build(),
        "lstm": lstm_lm_config(
            vocab_size=VOCAB, num_layers=2, model_dim=32, dropout_prob=0.0
        ).build(),
    }


MODELS = _models()


def packed_batch(segments: list[list[list[int]]], num_words: float = 0.0) -> NestedMap:
    """Rows of segments (token lists) as a packed batch; labels are the next input tokens."""
    lengths = [[len(s) for s in row] for row in segments]
    length = max(sum(x) for x in lengths)
    segment_ids, positions = segment_layout(lengths, length)
    ids = torch.zeros(len(segments), length, dtype=torch.long)
    for r, row in enumerate(segments):
        flat = [t for s in row for t in s]
        ids[r, : len(flat)] = torch.tensor(flat)
    return NestedMap(
        ids=ids,
        labels=torch.roll(ids, -1, dims=1),
        paddings=(segment_ids == 0).float(),
        segment_ids=segment_ids,
        segment_positions=positions,
        num_words=num_words,
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_information_crosses_a_segment_boundary(name: str) -> None:
    model = MODELS[name].eval()
    a, b, c = [2, 5, 9, 11], [2, 7, 8], [2, 30, 31, 32, 33]
    changed_a = [2, 40, 41, 42]
    logits = model.compute_logits(packed_batch([[a, b, c]]))
    changed = model.compute_logits(packed_batch([[changed_a, b, c]]))
    # The first segment changes, the others do not (to float precision).
    assert not torch.allclose(logits[0, :4], changed[0, :4], atol=1e-4)
    torch.testing.assert_close(logits[0, 4:], changed[0, 4:], atol=1e-5, rtol=1e-5)
    # And every segment computes what it computes alone in a row of its own.
    alone = model.compute_logits(packed_batch([[a], [b], [c]]))
    torch.testing.assert_close(logits[0, 4:7], alone[1, :3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[0, 7:12], alone[2, :5], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_extend_step_equals_the_full_forward_pass(name: str) -> None:
    model = MODELS[name].eval()
    rows = [[2, 5, 9, 11, 13, 17], [2, 7, 8, 44, 3, 21]]
    full = torch.log_softmax(model.compute_logits(packed_batch([[r] for r in rows])), dim=-1)
    state = model.init_state(2, 6)
    ids = torch.tensor(rows)
    for t in range(6):
        log_probs, state, _ = model.extend_step(state, ids[:, t])
        torch.testing.assert_close(log_probs, full[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_reach_every_parameter(name: str) -> None:
    model = MODELS[name].train()
    batch = packed_batch([[[2, 5, 9], [2, 7]], [[2, 30, 31, 32]]], num_words=4.0)
    loss, _ = model.compute_loss(batch, model.compute_predictions(batch))
    model.zero_grad()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_uniform_model_has_perplexity_equal_to_the_vocabulary_size() -> None:
    model = MODELS["transformer"]
    batch = packed_batch([[[2, 5, 9], [2, 7]], [[2, 30, 31, 32]]], num_words=3.0)
    loss, metrics = model.compute_loss(batch, NestedMap(logits=torch.zeros(2, 5, VOCAB)))
    finalized = model.finalize_metrics({k: v for k, (v, _) in metrics.items()})
    assert finalized["pplx"] == pytest.approx(VOCAB)
    assert metrics["num_target_tokens"][0] == 9
    # 9 tokens of log(V) nats each, over 3 words.
    assert finalized["log_pplx_per_word"] == pytest.approx(9 * math.log(VOCAB) / 3)
    assert finalized["pplx_per_word"] == pytest.approx(VOCAB**3)
    assert float(loss) == pytest.approx(math.log(VOCAB))
