"""The encoder and decoder-step programs of every exported model family, run eagerly through
ExportedStepModel, decode exactly as the task does (greedy and beam search; an LM's greedy
continuations)."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.layer import lengths_to_paddings
from seqlab.core.registry import get_experiment
from seqlab.decoding.beam_search import BeamSearch
from seqlab.decoding.sampling import Sampler
from seqlab.export.artifact import ArtifactError
from seqlab.export.exported_step_model import ExportedStepModel
from seqlab.export.model_families import LANGUAGE_MODEL, family_of
from seqlab.export.programs import (
    DecoderStepProgram,
    EncoderProgram,
    check_encoder_traceable,
    max_positions,
    program_examples,
)

MT = ["mt.bible_en_es.transformer_tiny", "mt.bible_en_es.hybrid_tiny", "mt.bible_en_es.rnmt_tiny"]
LM = ["lm.bible_en.transformer_tiny", "lm.bible_en.lstm_tiny"]


def random_task(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_experiment(name).task.build().eval()


def eager_programs(task: torch.nn.Module) -> ExportedStepModel:
    family = family_of(type(task).__name__, "torch")
    examples = program_examples(task, family)
    layout = examples.layout
    return ExportedStepModel(
        DecoderStepProgram(task, layout),
        list(layout.carried),
        list(layout.constants),
        encoder=None if family.kind == LANGUAGE_MODEL else EncoderProgram(task, family, layout),
        initial_shapes=examples.initial_shapes,
    )


def decode_with_programs(
    task: torch.nn.Module, sources: list[list[int]], search: BeamSearch.Config
) -> list[list[int]]:
    model = eager_programs(task)
    lengths = torch.tensor([len(s) for s in sources])
    src_ids = torch.zeros(len(sources), int(lengths.max()), dtype=torch.long)
    for i, row in enumerate(sources):
        src_ids[i, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        state = model.init_state(src_ids, lengths_to_paddings(lengths, src_ids.shape[1]))
        result = search.build().search(
            model, state, bos_id=2, eos_id=3, batch_size=len(sources), source_lengths=lengths,
            max_length=min(task.max_output_length(), max_positions(task) - 1),
        )  # fmt: skip
    return result.best_ids


@pytest.mark.parametrize("name", MT)
@pytest.mark.parametrize("beam_size", [1, 4])
def test_translation_programs_decode_like_the_task(
    name: str, random_sources: list[list[int]], beam_size: int, decode_with_task
) -> None:
    task = random_task(name)
    search = BeamSearch.Config(beam_size=beam_size, length_penalty_alpha=0.6 * (beam_size > 1))
    expected = decode_with_task(task, random_sources, search)
    assert decode_with_programs(task, random_sources, search) == expected
    assert any(len(ids) > 3 for ids in expected)


@pytest.mark.parametrize("name", LM)
def test_language_model_step_program_continues_like_the_task(name: str) -> None:
    task = random_task(name)
    sampler = Sampler.Config(temperature=0.0, max_new_tokens=12).build()
    prompts = [[5, 9, 17], [30], [8, 8, 40, 41, 7]]
    with torch.no_grad():
        expected = sampler.sample(
            task, task.init_state(3, sampler.num_steps(prompts)), prompts, 2, 3
        )
        model = eager_programs(task)
        got = sampler.sample(model, model.zero_state(3), prompts, 2, 3)
    assert got == expected
    assert any(len(ids) > 3 for ids in expected)


def test_growing_caches_grow_by_one_position_per_step() -> None:
    task = random_task("mt.bible_en_es.transformer_tiny")
    model = eager_programs(task)
    src_ids = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    paddings = lengths_to_paddings(torch.tensor([4, 2]), 4)
    with torch.no_grad():
        state = model.init_state(src_ids, paddings)
        assert state.carried.self_key.shape[3] == 0
        log_probs, state, _ = model.extend_step(state, torch.tensor([2, 2]))
        assert state.carried.self_key.shape[3] == 1
        _, state, _ = model.extend_step(state, torch.tensor([9, 9]))
        assert state.carried.self_key.shape[3] == 2
    assert log_probs.shape == (2, task.config.embedding.vocab_size)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2))


def test_an_lstm_encoder_is_refused_in_one_line() -> None:
    check_encoder_traceable(random_task("mt.bible_en_es.hybrid_tiny"))
    with pytest.raises(
        ArtifactError, match=r"RNMTPlusMT with an LSTM encoder .* \(the hybrid\) exports"
    ):
        check_encoder_traceable(random_task("mt.bible_en_es.rnmt_tiny"))


@pytest.mark.parametrize(
    "architecture, format, message",
    [
        (
            "RNMTPlusMT",
            "ctranslate2",
            r"--format ctranslate2 cannot express RNMTPlusMT .* torch or onnx",
        ),
        ("LSTMLM", "ctranslate2", r"CTranslate2 has no LSTM models"),
        ("ConformerCtc", "ctranslate2", r"CTranslate2 has no Conformer-CTC models"),
        ("ListenAttendSpell", "torch", r"cannot export ListenAttendSpell \(its bidirectional LSTM"),
        ("MultiTaskModel", "onnx", r"one task"),
    ],
)
def test_families_that_a_format_cannot_express_are_refused_in_one_line(
    architecture: str, format: str, message: str
) -> None:
    with pytest.raises(ArtifactError, match=message) as refused:
        family_of(architecture, format)
    assert "\n" not in str(refused.value)
