"""Batch compaction: examples that stop leave the batch, and nothing else changes.

Every model family's decoder is searched twice on a batch whose examples stop at very
different steps: once with its ``select_examples`` (the examples that stopped are dropped from
the state as the search goes) and once without it (every example decoded to the end). The
hypotheses must be the same and the scores equal up to float rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment
from seqlab.data.asr_data import batch_from_waveforms
from seqlab.data.mt_data import MTExamples, collate
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID
from seqlab.decoding import beam_search
from seqlab.decoding.ctc_prefix_scorer import CtcPrefixScorer
from seqlab.decoding.fused_model import FusedModel
from seqlab.decoding.greedy import greedy_search
from seqlab.decoding.lm_fusion import LMFusion
from seqlab.models.asr.ctc_loss import BLANK_ID

# Example b is pushed towards EOS from step STOPS[b] on: they stop at very different steps.
STOPS = [1, 17, 4, 30, 9, 2]
MAX_LENGTH = 40


class StopsAt:
    """A decoder whose example b strongly prefers EOS from step ``stops[b]`` on.

    With ``compact=False`` it hides ``select_examples``, so the search decodes every example
    to the end of the batch.
    """

    def __init__(self, task, stops: list[int], compact: bool) -> None:
        self.task = task
        self.stops = torch.tensor(stops)
        self.step = 0
        if compact:
            self.select_examples = self._select_examples

    def extend_step(self, state: NestedMap, ids: torch.Tensor):
        log_probs, state, attention = self.task.extend_step(state, ids)
        rows_per_example = log_probs.shape[0] // self.stops.shape[0]
        push = (self.stops <= self.step).repeat_interleave(rows_per_example)
        log_probs[:, EOS_ID] += 30.0 * push
        self.step += 1
        return log_probs, state, attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return self.task.expand_state(state, beam_size)

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        return self.task.reorder_state(state, indices)

    def _select_examples(self, state: NestedMap, examples: torch.Tensor) -> NestedMap:
        self.stops = self.stops[examples]
        return self.task.select_examples(state, examples)


def mt_state(name: str) -> tuple[object, Callable[[], NestedMap], torch.Tensor]:
    torch.manual_seed(0)
    task = get_experiment(name).task.build().eval()
    rows = [[10 + i + j for j in range(n)] for i, n in enumerate((3, 12, 5, 20, 8, 2))]
    examples = MTExamples(
        source_ids=[r + [EOS_ID] for r in rows],
        target_ids=[[5]] * len(rows),
        source_text=["s"] * len(rows),
        target_text=["t"] * len(rows),
    )
    batch = collate(examples, list(range(len(rows))))
    encoded = task.encode(batch.src_ids, batch.src_paddings)

    def state() -> NestedMap:
        return task.init_decoder_state(encoded, batch.src_paddings, MAX_LENGTH + 1)

    return task, state, (1.0 - batch.src_paddings).sum(dim=1).long()


def las_state(ctc_weight: float = 0.0) -> tuple[object, Callable[[], NestedMap], torch.Tensor]:
    torch.manual_seed(0)
    config = get_experiment("asr.flite_bible.las_tiny").task
    config.ctc_weight = ctc_weight
    task = config.build().eval()
    rng = np.random.default_rng(0)
    waveforms = [rng.normal(0, 0.1, n).astype(np.float32) for n in (4000, 9000, 6000) * 2]
    labels = [[5, 6]] * len(waveforms)
    names = [str(i) for i in range(len(waveforms))]
    batch = batch_from_waveforms(waveforms, labels, names, names, list(range(6)), 16000)
    encoded, paddings = task.encode(batch.audio, batch.audio_paddings)

    def state() -> NestedMap:
        return task.decoder.init_state(encoded, paddings)

    frames = (1.0 - paddings).sum(dim=1).round().long()
    if ctc_weight == 0:
        return task, state, frames
    # Joint CTC/attention decoding: the CTC prefix state (frames per example) is compacted too.
    ctc = CtcPrefixScorer(0.5, BLANK_ID, EOS_ID, never_ids=(BOS_ID,))
    log_probs = torch.log_softmax(task.ctc_proj(encoded), dim=-1)
    joint = FusedModel(task, [ctc], model_weight=0.5)
    joint.config = task.config

    def joint_state() -> NestedMap:
        return joint.initial_state(state(), [ctc.init_state(log_probs, paddings)])

    return joint, joint_state, frames


def fused_las_state() -> tuple[object, Callable[[], NestedMap], torch.Tensor]:
    """LAS with a tiny Transformer LM fused in (the LM's state is compacted with it)."""
    task, las_initial, frames = las_state()
    lm_config = get_experiment("lm.bible_en_asr_lm.transformer_tiny").task
    lm_config.embedding.vocab_size = 32  # the LAS preset's labels
    torch.manual_seed(1)
    lm = lm_config.build().eval()
    fusion = LMFusion.Config(weight=0.3).build(lm, torch.arange(32))
    fused = FusedModel(task, [fusion])
    fused.config = task.config  # the beam search settings of the LAS task

    def state() -> NestedMap:
        return fused.initial_state(las_initial(), [fusion.init_state(len(STOPS), MAX_LENGTH + 1)])

    return fused, state, frames


FAMILIES = {
    "transformer": lambda: mt_state("mt.bible_en_es.transformer_tiny"),
    "rnmt": lambda: mt_state("mt.bible_en_es.rnmt_tiny"),
    "hybrid": lambda: mt_state("mt.bible_en_es.hybrid_tiny"),
    "las": las_state,
    "las_fused_lm": fused_las_state,
    "las_joint_ctc": lambda: las_state(ctc_weight=0.3),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.no_grad()
def test_compacted_beam_search_equals_the_full_batch(family: str, monkeypatch) -> None:
    task, state, source_lengths = FAMILIES[family]()
    search = dataclasses.replace(
        task.config.beam_search,
        beam_size=4,
        num_hyps_to_return=2,
        max_decode_length_ratio=0.0,
        max_decode_length_offset=MAX_LENGTH,
    ).build()
    steps: dict[bool, int] = {}
    results = {}
    for compact in (False, True):
        model = StopsAt(task, STOPS, compact)
        results[compact] = search.search(
            model, state(), BOS_ID, EOS_ID, len(STOPS), source_lengths, MAX_LENGTH
        )
        steps[compact] = model.step
    full, compacted = results[False], results[True]
    assert compacted.ids == full.ids
    torch.testing.assert_close(compacted.scores, full.scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compacted.log_probs, full.log_probs, atol=1e-5, rtol=1e-5)
    # The examples really stopped apart: the hypotheses end at their push (with the fused
    # LM's or the CTC head's extra cost per token, shorter hypotheses win some of the later ones).
    lengths = [len(h) for h in full.best_ids]
    if family in ("las_fused_lm", "las_joint_ctc"):
        assert len(set(lengths)) >= 4, lengths
    else:
        assert lengths == [min(s, MAX_LENGTH) for s in STOPS]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.no_grad()
def test_compacted_greedy_search_equals_the_full_batch(family: str) -> None:
    task, state, _ = FAMILIES[family]()
    max_lengths = torch.full((len(STOPS),), MAX_LENGTH)
    outputs = {}
    for compact in (False, True):
        model = StopsAt(task, STOPS, compact)
        outputs[compact] = greedy_search(model, state(), BOS_ID, EOS_ID, len(STOPS), max_lengths)
    assert outputs[True] == outputs[False]
    lengths = [len(h) for h in outputs[True]]
    if family == "las_joint_ctc":  # the CTC head's end score can outweigh the push
        assert len(set(lengths)) >= 4, lengths
    else:
        assert lengths == STOPS


def test_compaction_happens(monkeypatch) -> None:
    """The compacting search really calls select_examples, with fewer examples each time."""
    task, state, source_lengths = FAMILIES["transformer"]()
    sizes: list[int] = []
    model = StopsAt(task, STOPS, compact=True)
    inner = model.select_examples

    def spy(state: NestedMap, examples: torch.Tensor) -> NestedMap:
        sizes.append(len(examples))
        return inner(state, examples)

    model.select_examples = spy
    search = dataclasses.replace(task.config.beam_search, beam_size=4).build()
    with torch.no_grad():
        search.search(model, state(), BOS_ID, EOS_ID, len(STOPS), source_lengths, MAX_LENGTH)
    assert sizes and sizes == sorted(sizes, reverse=True) and sizes[-1] < len(STOPS)
    assert beam_search.COMPACT_FRACTION > 0
