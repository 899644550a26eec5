"""The encoder and decoder-step programs, run eagerly through ExportedStepModel, decode exactly
as TransformerMT does (greedy and beam search)."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.layer import lengths_to_paddings
from seqlab.decoding.beam_search import BeamSearch
from seqlab.export.exported_step_model import ExportedStepModel
from seqlab.export.programs import DecoderStepProgram, EncoderProgram, ProgramShapes
from seqlab.models.mt.transformer_model import TransformerMT


def decode_with_programs(
    task: TransformerMT, sources: list[list[int]], search: BeamSearch.Config
) -> list[list[int]]:
    shapes = ProgramShapes.of(task)
    model = ExportedStepModel(
        EncoderProgram(task), DecoderStepProgram(task), shapes.num_layers, shapes.num_heads,
        shapes.head_dim,
    )  # fmt: skip
    lengths = torch.tensor([len(s) for s in sources])
    src_ids = torch.zeros(len(sources), int(lengths.max()), dtype=torch.long)
    for i, row in enumerate(sources):
        src_ids[i, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        state = model.init_state(src_ids, lengths_to_paddings(lengths, src_ids.shape[1]))
        result = search.build().search(
            model, state, bos_id=2, eos_id=3, batch_size=len(sources), source_lengths=lengths,
            max_length=shapes.max_positions - 1,
        )  # fmt: skip
    return result.best_ids


@pytest.mark.parametrize("beam_size", [1, 4])
def test_programs_decode_like_the_task(
    random_tiny_mt: TransformerMT, random_sources: list[list[int]], beam_size: int, decode_with_task
) -> None:
    sources = random_sources
    search = BeamSearch.Config(beam_size=beam_size, length_penalty_alpha=0.6 * (beam_size > 1))
    expected = decode_with_task(random_tiny_mt, sources, search)
    assert decode_with_programs(random_tiny_mt, sources, search) == expected


def test_step_program_grows_the_caches_by_one_position(random_tiny_mt: TransformerMT) -> None:
    shapes = ProgramShapes.of(random_tiny_mt)
    src_ids = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    paddings = lengths_to_paddings(torch.tensor([4, 2]), 4)
    with torch.no_grad():
        cross_key, cross_value = EncoderProgram(random_tiny_mt)(src_ids, paddings)
        assert cross_key.shape == shapes.cache_shape(2, 4)
        cache = torch.zeros(shapes.cache_shape(2, 0))
        step = DecoderStepProgram(random_tiny_mt)
        log_probs, key, value = step(
            torch.tensor([2, 2]), cache, cache, cross_key, cross_value, paddings
        )
        assert log_probs.shape == (2, shapes.vocab_size)
        assert key.shape == value.shape == shapes.cache_shape(2, 1)
        _, key, _ = step(torch.tensor([9, 9]), key, value, cross_key, cross_value, paddings)
        assert key.shape == shapes.cache_shape(2, 2)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2))
