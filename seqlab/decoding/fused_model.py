"""An IncrementalModel whose next-token scores add other scorers' to a decoder's.

Beam search over a :class:`FusedModel` scores token y after a prefix by

    model_weight * log P_model(y | prefix, X) + sum_i scorer_i(y | prefix) + length_bonus

Two kinds of scorer exist: shallow fusion of a language model
(:class:`seqlab.decoding.lm_fusion.LMFusion`, weight * log P_lm(y | prefix)) and joint
CTC/attention decoding (:class:`seqlab.decoding.ctc_prefix_scorer.CtcPrefixScorer`, w times
the CTC prefix score's change, with model_weight = 1 - w). The beam search needs no change:
the fused model expands and reorders every state together. Pass ``max_step_gain=length_bonus``
to :meth:`BeamSearch.search`, since a step may now raise a hypothesis' score by up to the
bonus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import Tensor

from seqlab.core.nested_map import NestedMap
from seqlab.decoding.step_model import IncrementalModel, example_rows


class StepScorer(Protocol):
    """Scores every next label of N hypotheses (its weight already applied)."""

    def extend_step(self, state: NestedMap, labels: Tensor) -> tuple[Tensor, NestedMap]:
        """[N] labels fed (BOS first) -> ([N, V] scores of the next label, new state)."""
        ...

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """K copies of each row, row ``b * K + k`` from row b."""
        ...

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        """Rows ``indices`` [M] of a state of N rows."""
        ...


class FusedModel:
    """``model`` with the scores of ``scorers`` added (see the module docstring)."""

    def __init__(
        self,
        model: IncrementalModel,
        scorers: Sequence[StepScorer],
        model_weight: float = 1.0,
        length_bonus: float = 0.0,
    ) -> None:
        self.model = model
        self.scorers = list(scorers)
        self.model_weight = model_weight
        self.length_bonus = length_bonus
        if not hasattr(model, "select_examples"):
            self.select_examples = None  # no batch compaction for a decoder without it

    def initial_state(
        self, model_state: NestedMap, scorer_states: Sequence[NestedMap]
    ) -> NestedMap:
        """The fused state of B rows from the decoder's and each scorer's state of B rows."""
        if len(scorer_states) != len(self.scorers):
            raise ValueError(f"{len(self.scorers)} scorers but {len(scorer_states)} states")
        return NestedMap(model=model_state, scorers=list(scorer_states), beam_size=1)

    def select_examples(self, state: NestedMap, examples: Tensor) -> NestedMap:
        """Keeps the examples ``examples`` ([B'] long, increasing) of every state, with all
        their K rows (batch compaction)."""
        rows = example_rows(examples, state.beam_size)
        return NestedMap(
            model=self.model.select_examples(state.model, examples),
            scorers=[
                s.reorder_state(x, rows) for s, x in zip(self.scorers, state.scorers, strict=True)
            ],
            beam_size=state.beam_size,
        )

    def extend_step(self, state: NestedMap, ids: Tensor) -> tuple[Tensor, NestedMap, Tensor | None]:
        """[N] last ids -> ([N, V] fused scores, state, the decoder's [N, S] attention)."""
        log_probs, model_state, attention = self.model.extend_step(state.model, ids)
        scores = log_probs if self.model_weight == 1.0 else self.model_weight * log_probs
        scorer_states = []
        for scorer, scorer_state in zip(self.scorers, state.scorers, strict=True):
            extra, scorer_state = scorer.extend_step(scorer_state, ids)
            scores = scores + extra.to(scores.device)
            scorer_states.append(scorer_state)
        if self.length_bonus:
            scores = scores + self.length_bonus
        return scores, NestedMap(state, model=model_state, scorers=scorer_states), attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return NestedMap(
            model=self.model.expand_state(state.model, beam_size),
            scorers=[
                s.expand_state(x, beam_size)
                for s, x in zip(self.scorers, state.scorers, strict=True)
            ],
            beam_size=state.beam_size * beam_size,
        )

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        return NestedMap(
            state,
            model=self.model.reorder_state(state.model, indices),
            scorers=[
                s.reorder_state(x, indices)
                for s, x in zip(self.scorers, state.scorers, strict=True)
            ],
        )
