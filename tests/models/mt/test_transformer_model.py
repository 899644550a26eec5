"""TransformerMT: incremental decoding equals the teacher-forced forward; beam search."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.registry import get_experiment
from seqlab.data.mt_data import MTExamples, collate
from seqlab.models.mt.transformer_model import TransformerMT


def tiny_task() -> TransformerMT:
    torch.manual_seed(0)
    task = get_experiment("mt.bible_en_es.transformer_tiny").task.build()
    task.eval()
    return task


def batch_of(rows: list[list[int]], targets: list[list[int]]):
    examples = MTExamples(
        source_ids=[r + [3] for r in rows],
        target_ids=targets,
        source_text=["s"] * len(rows),
        target_text=["t"] * len(rows),
    )
    return collate(examples, list(range(len(rows))))


def test_extend_step_matches_teacher_forced_logits() -> None:
    task = tiny_task()
    batch = batch_of([[10, 11, 12, 13], [20, 21]], [[5, 6, 7, 8, 9], [30, 31, 32]])
    with torch.no_grad():
        full = torch.log_softmax(task.compute_predictions(batch).logits, dim=-1)
        encoded = task.encode(batch.src_ids, batch.src_paddings)
        state = task.decoder.init_state(encoded, batch.src_paddings, batch.tgt_in_ids.shape[1])
        for t in range(batch.tgt_in_ids.shape[1]):
            log_probs, state, attention = task.extend_step(
                state, batch.tgt_in_ids[:, t], return_attention=True
            )
            real = batch.tgt_paddings[:, t] == 0
            torch.testing.assert_close(log_probs[real], full[real, t], atol=1e-4, rtol=1e-4)
            assert attention is not None
            torch.testing.assert_close(attention.sum(-1), torch.ones(2))


def test_decode_returns_one_hypothesis_per_example_within_max_length() -> None:
    task = tiny_task()
    batch = batch_of([[10, 11, 12, 13], [20, 21]], [[5], [6]])
    out = task.decode(batch)
    assert len(out.ids) == 2 and out.scores.shape == (2,)
    for ids, source_length in zip(out.ids, (5, 3), strict=True):
        assert len(ids) <= 2 * source_length + 10
        assert 3 not in ids  # EOS is stripped


def test_alignment_image_rows_are_distributions() -> None:
    task = tiny_task()
    batch = batch_of([[10, 11, 12, 13]], [[5, 6, 7]])
    probs = task.alignment(batch)
    assert probs.shape == (4, 5)  # BOS + 3 target tokens, 4 source tokens + EOS
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))


@pytest.mark.parametrize("coverage_penalty_beta", [0.0, 0.2])
def test_beam_search_with_per_example_cross_state_equals_per_beam(
    coverage_penalty_beta: float, search_per_example_and_per_beam
) -> None:
    task = tiny_task()
    task.config.beam_search.coverage_penalty_beta = coverage_penalty_beta
    batch = batch_of([[10, 11, 12, 13], [20, 21], [30, 31, 32]], [[5], [6], [7]])
    per_example, per_beam = search_per_example_and_per_beam(task, batch)
    assert per_example.ids == per_beam.ids
    # Not bitwise: SDPA with K queries per row rounds differently from K rows of one query.
    torch.testing.assert_close(per_example.scores, per_beam.scores, atol=0.0, rtol=1e-6)
    torch.testing.assert_close(per_example.log_probs, per_beam.log_probs, atol=0.0, rtol=1e-6)
