"""CTC decoding: greedy collapse rules, prefix beam search against greedy and brute force."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from seqlab.decoding.ctc import ctc_beam_decode, ctc_greedy_decode, ctc_prefix_beam_search


def _collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, previous = [], None
    for label in path:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return tuple(out)


def _brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log P(labels) for every label sequence, summing over all T^V frame paths."""
    totals: dict[tuple[int, ...], float] = {}
    frames, vocab = log_probs.shape
    for path in itertools.product(range(vocab), repeat=frames):
        score = sum(float(log_probs[t, label]) for t, label in enumerate(path))
        key = _collapse(path)
        totals[key] = float(
            torch.logaddexp(torch.tensor(totals.get(key, -math.inf)), torch.tensor(score))
        )
    return totals


def test_greedy_merges_repeats_and_drops_blanks() -> None:
    path = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3, 3]])
    log_probs = F.one_hot(path, 4).float().log()
    paddings = torch.zeros(1, 10)
    paddings[0, 9] = 1.0
    assert ctc_greedy_decode(log_probs, paddings) == [[1, 1, 2, 3]]


def test_beam_search_equals_greedy_on_peaked_distribution() -> None:
    generator = torch.Generator().manual_seed(0)
    best = torch.randint(0, 6, (3, 12), generator=generator)
    logits = torch.randn(3, 12, 6, generator=generator) + 8.0 * F.one_hot(best, 6)
    log_probs = logits.log_softmax(-1)
    paddings = torch.zeros(3, 12)
    paddings[1, 8:] = 1.0
    greedy = ctc_greedy_decode(log_probs, paddings)
    assert ctc_beam_decode(log_probs, paddings, beam_size=4) == greedy
    assert ctc_beam_decode(log_probs, paddings, beam_size=4, labels_per_frame=2) == greedy


def test_beam_search_finds_the_best_labels_where_greedy_does_not() -> None:
    # Frame by frame, blank is most likely (0.6), so greedy outputs nothing. But the label 1
    # collects probability over many alignments: P("1") = 1 - 0.6^2 - 0.4^2 ... > P("").
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]])
    log_probs = probs.log()
    assert ctc_greedy_decode(log_probs[None], torch.zeros(1, 2)) == [[]]
    exact = _brute_force(log_probs)
    assert max(exact, key=exact.get) == (1,)
    results = ctc_prefix_beam_search(log_probs, beam_size=4)
    assert results[0][0] == [1]
    assert results[0][1] == pytest_approx(exact[(1,)])


def test_beam_search_scores_match_brute_force() -> None:
    generator = torch.Generator().manual_seed(3)
    log_probs = torch.randn(5, 3, generator=generator).log_softmax(-1)
    exact = _brute_force(log_probs)
    results = ctc_prefix_beam_search(log_probs, beam_size=100)
    assert len(results) == len(exact)
    for labels, score in results:
        assert math.isclose(score, exact[tuple(labels)], rel_tol=1e-5, abs_tol=1e-5)
    assert tuple(results[0][0]) == max(exact, key=exact.get)


def pytest_approx(value: float) -> object:
    import pytest

    return pytest.approx(value, rel=1e-5)
