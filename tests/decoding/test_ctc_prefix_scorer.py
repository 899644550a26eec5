"""CTC prefix scores against brute force over every frame path, and joint CTC/attention search."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID
from seqlab.decoding.beam_search import BeamSearch
from seqlab.decoding.ctc_prefix_scorer import CtcPrefixScorer
from seqlab.decoding.fused_model import FusedModel

BLANK, A, B = 0, 4, 5
V = 6
EMITTED = (BLANK, A, B)  # the only outputs with probability > 0 (so paths can be enumerated)


def _frames(num_frames: int, seed: int) -> torch.Tensor:
    """[T, V] log-posteriors: random over blank, A and B; -inf for UNK, BOS and EOS."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.full((num_frames, V), -math.inf)
    logits[:, list(EMITTED)] = torch.randn(num_frames, len(EMITTED), generator=g) * 2
    return logits.log_softmax(-1).double()


def _collapse(path: tuple[int, ...]) -> list[int]:
    out, previous = [], None
    for symbol in path:
        if symbol != previous and symbol != BLANK:
            out.append(symbol)
        previous = symbol
    return out


def _brute_force(frames: torch.Tensor, prefix: list[int], exact: bool) -> float:
    """log P(the labels start with ``prefix``) (or equal it, ``exact``) over every path."""
    total = 0.0
    for path in itertools.product(EMITTED, repeat=frames.shape[0]):
        labels = _collapse(path)
        if (labels == prefix) if exact else (labels[: len(prefix)] == prefix):
            total += math.exp(sum(float(frames[t, s]) for t, s in enumerate(path)))
    return math.log(total) if total > 0 else -math.inf


def _scorer() -> CtcPrefixScorer:
    return CtcPrefixScorer(1.0, BLANK, EOS_ID, never_ids=(BOS_ID,))


@pytest.mark.parametrize("prefix", [[], [A], [A, A], [A, B, A]])
def test_prefix_scores_equal_the_sum_over_every_frame_path(prefix: list[int]) -> None:
    frames = _frames(5, seed=len(prefix))
    scorer = _scorer()
    state = scorer.init_state(frames[None].float(), torch.zeros(1, 5))
    scores, state = scorer.extend_step(state, torch.tensor([BOS_ID]))
    total = 0.0
    for label in prefix:
        total += float(scores[0, label])
        scores, state = scorer.extend_step(state, torch.tensor([label]))
    # The scores are differences of prefix scores, so they add up to psi(prefix).
    assert total == pytest.approx(_brute_force(frames, prefix, exact=False), abs=1e-4)
    for label in (A, B):
        expected = _brute_force(frames, [*prefix, label], exact=False)
        assert total + float(scores[0, label]) == pytest.approx(expected, abs=1e-4)
    expected_end = _brute_force(frames, prefix, exact=True)
    assert total + float(scores[0, EOS_ID]) == pytest.approx(expected_end, abs=1e-4)
    # ... which is what the CTC loss says of the whole label sequence.
    if prefix:
        nll = F.ctc_loss(
            frames[:, None], torch.tensor([prefix]), [5], [len(prefix)], BLANK, reduction="sum"
        )
        assert expected_end == pytest.approx(-float(nll), abs=1e-4)
    assert (scores <= 0).all()
    assert scores[0, BLANK] == -math.inf and scores[0, BOS_ID] == -math.inf


def test_padded_frames_change_nothing() -> None:
    frames = _frames(4, seed=7)
    padded = torch.cat([frames, _frames(3, seed=8)])  # 3 more frames, marked as padding
    paddings = torch.tensor([[0.0] * 4 + [1.0] * 3])
    scorer = _scorer()
    states = [
        scorer.init_state(frames[None].float(), torch.zeros(1, 4)),
        scorer.init_state(padded[None].float(), paddings),
    ]
    for label in (BOS_ID, A, B):
        results = [scorer.extend_step(s, torch.tensor([label])) for s in states]
        states = [state for _, state in results]
        torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)


def test_beams_reorder_with_their_frames() -> None:
    """Two examples, two beams each, reordered within examples: the same scores as scoring
    each beam's prefix alone."""
    frames = torch.stack([_frames(5, seed=1), _frames(5, seed=2)]).float()
    scorer = _scorer()
    state = scorer.expand_state(scorer.init_state(frames, torch.zeros(2, 5)), 2)
    _, state = scorer.extend_step(state, torch.full((4,), BOS_ID))
    state = scorer.reorder_state(state, torch.tensor([1, 0, 3, 3]))
    scores, _ = scorer.extend_step(state, torch.tensor([A, B, B, A]))
    for row, (example, label) in enumerate([(0, A), (0, B), (1, B), (1, A)]):
        alone = scorer.init_state(frames[example : example + 1], torch.zeros(1, 5))
        _, alone = scorer.extend_step(alone, torch.tensor([BOS_ID]))
        expected, _ = scorer.extend_step(alone, torch.tensor([label]))
        torch.testing.assert_close(scores[row], expected[0])


def test_an_impossible_prefix_scores_minus_infinity_not_nan() -> None:
    # Two frames can emit at most two labels: after "A B" nothing but EOS is possible, and
    # the prefix "A B A" itself has probability 0.
    frames = _frames(2, seed=3)
    scorer = _scorer()
    state = scorer.init_state(frames[None].float(), torch.zeros(1, 2))
    for label in (BOS_ID, A, B):
        scores, state = scorer.extend_step(state, torch.tensor([label]))
    assert torch.isfinite(scores[0, EOS_ID]) and scores[0, A] == -math.inf
    scores, state = scorer.extend_step(state, torch.tensor([A]))
    assert not scores.isnan().any() and (scores == -math.inf).all()


class _Speller:
    """An attention decoder stub: prefers "A A" then EOS whatever the audio says."""

    def extend_step(self, state: NestedMap, ids: torch.Tensor):
        table = torch.full((V,), -10.0)
        length = state.length
        table[A if int(length[0]) < 2 else EOS_ID] = 0.0
        log_probs = table.log_softmax(-1).expand(ids.shape[0], V).clone()
        return log_probs, NestedMap(length=length + 1), None

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return NestedMap(length=state.length.repeat_interleave(beam_size))

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        return NestedMap(length=state.length[indices])


def test_joint_decoding_follows_the_ctc_head_where_the_speller_does_not_listen() -> None:
    # The frames clearly say "B": blank, B, B, blank.
    frames = torch.full((4, V), -20.0)
    frames[:, BLANK] = 0.0
    frames[1:3, B], frames[1:3, BLANK] = 0.0, -20.0
    frames = frames.log_softmax(-1)[None]
    search = BeamSearch.Config(beam_size=4, length_penalty_alpha=0.0).build()

    def decode(weight: float) -> list[int]:
        speller = _Speller()
        state = NestedMap(length=torch.zeros(1, dtype=torch.long))
        model: object = speller
        if weight > 0:
            scorer = CtcPrefixScorer(weight, BLANK, EOS_ID, never_ids=(BOS_ID,))
            model = FusedModel(speller, [scorer], model_weight=1.0 - weight)
            state = model.initial_state(state, [scorer.init_state(frames, torch.zeros(1, 4))])
        result = search.search(model, state, BOS_ID, EOS_ID, 1, torch.tensor([4]), 5)
        return result.best_ids[0]

    assert decode(0.0) == [A, A]
    assert decode(0.5) == [B]


def test_las_decodes_jointly_with_its_ctc_head_and_refuses_it_without_one() -> None:
    config = get_experiment("asr.flite_bible.las_tiny").task
    config.ctc_decode_weight = 0.3
    with pytest.raises(ConfigError, match="ctc_decode_weight"):
        config.build()
    config.ctc_weight = 0.3
    torch.manual_seed(0)
    task = config.build().eval()
    audio = torch.randn(2, 8000) * 0.1
    paddings = torch.zeros(2, 8000)
    paddings[1, 5000:] = 1.0
    with torch.no_grad():
        out = task.decode(NestedMap(audio=audio, audio_paddings=paddings))
    assert len(out.ids) == 2 and torch.isfinite(out.scores).all()
