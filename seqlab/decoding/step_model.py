"""The interface that beam search and greedy search need from a decoder."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from seqlab.core.nested_map import NestedMap


class IncrementalModel(Protocol):
    """A decoder that extends N rows of hypotheses by one token per call.

    The caller creates the state for its B examples. Greedy search decodes those B rows as they
    are; beam search first calls ``expand_state`` once to get B * K rows (beam k of example b in
    row ``b * K + k``), then alternates ``extend_step`` and ``reorder_state``.
    """

    def extend_step(self, state: NestedMap, ids: Tensor) -> tuple[Tensor, NestedMap, Tensor | None]:
        """Feeds one token per row and predicts the next one.

        Args:
          state: decoder state of N rows.
          ids: [N] long, the last token of each row (BOS at the first step).

        Returns:
          (log_probs, new_state, attention_probs): log_probs [N, V] of the next token; the
          state after consuming ``ids``; attention_probs [N, S] over the source positions in
          this step, or None when the model has none (needed only for the coverage penalty).
        """
        ...

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """Makes K beams of each example: row ``b * K + k`` starts as a copy of row b.

        Equivalent to ``reorder_state(state, arange(B).repeat_interleave(K))``, but afterwards
        the model may keep what all beams of an example share (e.g. the encoder outputs) once
        per example, because ``reorder_state`` then only moves rows within their example.

        Args:
          state: decoder state of B rows.
          beam_size: K.

        Returns:
          The state of B * K rows.
        """
        ...

    def select_examples(self, state: NestedMap, examples: Tensor) -> NestedMap:
        """Keeps only some examples, each with all its rows (batch compaction; optional).

        A search drops the examples that have finished, so that later steps compute only the
        rest. Models without this method decode every example to the end of the batch.

        Args:
          state: decoder state of B examples with K rows each (K = 1 before ``expand_state``).
          examples: [B'] long, increasing indices into the B examples.

        Returns:
          The state of the B' examples, in that order, K rows each.
        """
        ...

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        """Gathers the rows ``indices`` of the state.

        Args:
          state: decoder state of N rows.
          indices: [M] long in [0, N), row m of the result is a copy of row ``indices[m]``.
            After ``expand_state(state, K)``: M = N and ``indices[m] // K == m // K`` (beams
            never leave their example). Otherwise any gather, M may differ from N.

        Returns:
          The state of M rows.
        """
        ...


def example_rows(examples: Tensor, beam_size: int) -> Tensor:
    """[B'] example indices -> [B' * K] the rows of their K beams (row ``b * K + k``)."""
    beams = torch.arange(beam_size, device=examples.device)
    return (examples[:, None] * beam_size + beams).view(-1)
