"""The interface that beam search and greedy search need from a decoder."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from seqlab.core.nested_map import NestedMap


class IncrementalModel(Protocol):
    """A decoder that extends N rows of hypotheses by one token per call.

    The caller creates the state for its B examples; the search expands it to B * K rows with
    ``reorder_state`` and then calls ``extend_step`` once per output position.
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

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        """Gathers the rows ``indices`` of every state tensor along dim 0.

        Args:
          state: decoder state of N rows.
          indices: [M] long in [0, N); M may exceed N (e.g. B examples -> B * K beams).

        Returns:
          The state of M rows, row m a copy of row ``indices[m]``.
        """
        ...
