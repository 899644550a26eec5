"""Fixtures shared by the translation model tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID
from seqlab.decoding.beam_search import BeamSearchResult
from seqlab.models.mt.translation_task import TranslationTask


class PerBeamState:
    """The task, but its beams each gather a copy of the whole state (the generic path).

    Expanding by a gather leaves the state unexpanded as far as the task knows, so every later
    ``reorder_state`` also gathers what the task otherwise keeps once per example.
    """

    def __init__(self, task: TranslationTask, num_examples: int) -> None:
        self.task = task
        self.num_examples = num_examples

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor
    ) -> tuple[torch.Tensor, NestedMap, torch.Tensor | None]:
        return self.task.extend_step(state, ids)

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        rows = torch.arange(self.num_examples).repeat_interleave(beam_size)
        return self.task.reorder_state(state, rows)

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        return self.task.reorder_state(state, indices)


SearchBothWays = Callable[[TranslationTask, NestedMap], list[BeamSearchResult]]


@pytest.fixture
def search_per_example_and_per_beam() -> SearchBothWays:
    """Beam-searches a batch (beam 4, 3-best) with the task's own beam state handling and with
    :class:`PerBeamState`; returns the two results in that order."""

    def search_both(task: TranslationTask, batch: NestedMap) -> list[BeamSearchResult]:
        search = dataclasses.replace(
            task.config.beam_search, beam_size=4, num_hyps_to_return=3, max_decode_length_offset=4
        ).build()
        encoded = task.encode(batch.src_ids, batch.src_paddings)
        source_lengths = (1.0 - batch.src_paddings).sum(dim=1).long()
        num_examples = batch.src_ids.shape[0]
        results = []
        for model in (task, PerBeamState(task, num_examples)):
            state = task.init_decoder_state(encoded, batch.src_paddings, 20)
            results.append(
                search.search(model, state, BOS_ID, EOS_ID, num_examples, source_lengths, 19)
            )
        return results

    return search_both
