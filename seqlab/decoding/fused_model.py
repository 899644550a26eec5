"""An IncrementalModel whose next-token scores add a fused language model's to a decoder's.

Beam search over a :class:`FusedModel` is attention decoding with shallow fusion
(:mod:`seqlab.decoding.lm_fusion`): every step scores token y by

    log P_model(y | prefix, X) + weight * log P_lm(y | prefix) + length_bonus

The beam search needs no change: the fused model expands and reorders both states together.
Pass ``max_step_gain=length_bonus`` to :meth:`BeamSearch.search`, since a step may now raise a
hypothesis' score by up to the bonus.
"""

from __future__ import annotations

from torch import Tensor

from seqlab.core.nested_map import NestedMap
from seqlab.decoding.lm_fusion import LMFusion
from seqlab.decoding.step_model import IncrementalModel, example_rows


class FusedModel:
    """``model`` with ``fusion``'s language model scores added (see the module docstring)."""

    def __init__(self, model: IncrementalModel, fusion: LMFusion) -> None:
        self.model = model
        self.fusion = fusion
        if not hasattr(model, "select_examples"):
            self.select_examples = None  # no batch compaction for a decoder without it

    def select_examples(self, state: NestedMap, examples: Tensor) -> NestedMap:
        """Keeps the examples ``examples`` ([B'] long, increasing) of both states, with all
        their K rows (batch compaction)."""
        return NestedMap(
            model=self.model.select_examples(state.model, examples),
            lm=self.fusion.reorder_state(state.lm, example_rows(examples, state.beam_size)),
            beam_size=state.beam_size,
        )

    def initial_state(self, model_state: NestedMap, batch_size: int, max_length: int) -> NestedMap:
        """The fused state of B rows from the decoder's state of B rows; the language model
        gets room for ``max_length`` tokens after BOS."""
        lm_state = self.fusion.init_state(batch_size, max_length)
        return NestedMap(model=model_state, lm=lm_state, beam_size=1)

    def extend_step(self, state: NestedMap, ids: Tensor) -> tuple[Tensor, NestedMap, Tensor | None]:
        """[N] last ids -> ([N, V] fused scores, state, the decoder's [N, S] attention)."""
        log_probs, model_state, attention = self.model.extend_step(state.model, ids)
        lm_scores, lm_state = self.fusion.extend_step(state.lm, ids)
        scores = log_probs + lm_scores.to(log_probs.device) + self.fusion.length_bonus
        return scores, NestedMap(state, model=model_state, lm=lm_state), attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return NestedMap(
            model=self.model.expand_state(state.model, beam_size),
            lm=self.fusion.expand_state(state.lm, beam_size),
            beam_size=state.beam_size * beam_size,
        )

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        return NestedMap(
            state,
            model=self.model.reorder_state(state.model, indices),
            lm=self.fusion.reorder_state(state.lm, indices),
        )
