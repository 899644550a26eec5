"""Language model scores of the label prefixes that CTC prefix beam search keeps.

CTC prefix beam search with shallow fusion (Hannun et al. 2014) needs, for every prefix in
its beam, the fused language model's score of each label that may extend it. The scorer keeps
the language model's state of each prefix in the beam, so a prefix costs one language model
step when it first enters the beam; prefixes of the same length advance in one batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from seqlab.core.nested_map import NestedMap
from seqlab.data.sentencepiece_tokenizer import EOS_ID
from seqlab.decoding.lm_fusion import LMFusion

Prefix = tuple[int, ...]


class PrefixLMScorer:
    """Fused language model scores (weight * log P_lm) of extending each kept prefix."""

    def __init__(self, fusion: LMFusion, max_length: int, roots: Sequence[Prefix] = ((),)) -> None:
        """``max_length``: the longest prefix to score (the utterance's frames). ``roots``: the
        empty prefix of each search that shares this scorer; a prefix is its root followed by
        its labels (one search: the root is ``()``; several: e.g. ``(u,)`` for utterance u)."""
        self.fusion = fusion
        self._root_length = len(roots[0])
        if any(len(root) != self._root_length for root in roots):
            raise ValueError(f"roots must have one length, got {list(roots)}")
        scores, state = fusion.start(len(roots), max_length + 1)
        row_scores = scores.tolist()
        # prefix -> (its language model state of one row, [V] scores of its next label)
        self._kept: dict[Prefix, tuple[NestedMap, list[float]]] = {
            root: (
                self.fusion.reorder_state(state, torch.tensor([i], device=scores.device)),
                row_scores[i],
            )
            for i, root in enumerate(roots)
        }

    @property
    def length_bonus(self) -> float:
        return self.fusion.length_bonus

    def next_scores(self, prefixes: list[Prefix]) -> dict[Prefix, list[float]]:
        """[V] scores of each label after each prefix; forgets every other prefix.

        Every new prefix extends one of the prefixes of the previous call by one label (a
        root is never new). New prefixes of one length advance in one batch, whichever
        search they belong to.
        """
        new = sorted((p for p in prefixes if p not in self._kept), key=len)
        for _, group in itertools.groupby(new, key=len):
            rows = list(group)
            state = self.fusion.concat_states([self._kept[p[:-1]][0] for p in rows])
            labels = torch.tensor([p[-1] for p in rows], dtype=torch.long)
            scores, state = self.fusion.extend_step(state, labels)
            for i, (prefix, row_scores) in enumerate(zip(rows, scores.tolist(), strict=True)):
                row = torch.tensor([i], device=scores.device)
                self._kept[prefix] = (self.fusion.reorder_state(state, row), row_scores)
        self._kept = {p: self._kept[p] for p in prefixes}
        return {p: self._kept[p][1] for p in prefixes}

    def end_score(self, prefix: Prefix) -> float:
        """weight * log P_lm(EOS | prefix) of a prefix given to the last ``next_scores``."""
        return self._kept[prefix][1][EOS_ID]
