"""CTC decoding: greedy (best path) and prefix beam search, in log space.

A CTC output of T frames over V labels (``blank`` included) maps to a label sequence by
merging repeated labels and then removing blanks. Greedy decoding takes the best label per
frame; prefix beam search (Graves 2012; Hannun et al. 2014) keeps the ``beam_size`` most
probable label prefixes, each scored by the total probability of all frame alignments that
collapse to it, split into alignments ending in a blank and in a non-blank.

With shallow fusion (a :class:`PrefixLMScorer`), prefixes are ranked by

    log P_ctc(prefix | X) + weight * log P_lm(prefix) + length_bonus * |prefix|

and the final ranking adds weight * log P_lm(EOS | prefix) (Hannun et al. 2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from seqlab.decoding.lm_fusion import LMFusion
from seqlab.decoding.prefix_lm_scorer import PrefixLMScorer

NEG_INF = float("-inf")


def ctc_greedy_decode(
    log_probs: torch.Tensor, paddings: torch.Tensor, blank: int = 0
) -> list[list[int]]:
    """Best-path decoding.

    Args:
      log_probs: [B, T, V] per-frame (log-)probabilities (any monotone score works).
      paddings: [B, T], 1.0 = pad.
      blank: the blank label.

    Returns:
      B label lists (repeats merged, blanks removed).
    """
    best = log_probs.argmax(dim=-1).cpu()
    lengths = (1.0 - paddings).sum(dim=1).round().long().cpu()
    out = []
    for row, length in zip(best, lengths.tolist(), strict=True):
        labels, previous = [], blank
        for label in row[:length].tolist():
            if label != previous and label != blank:
                labels.append(label)
            previous = label
        out.append(labels)
    return out


def _log_add(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _add(
    beams: dict[tuple[int, ...], list[float]],
    prefix: tuple[int, ...],
    blank_score: float,
    label_score: float,
) -> None:
    """Adds alignment probability (ending in blank / in a label) to ``prefix``."""
    if blank_score == NEG_INF and label_score == NEG_INF:
        return  # no alignment reaches this prefix
    entry = beams.setdefault(prefix, [NEG_INF, NEG_INF])
    entry[0] = _log_add(entry[0], blank_score)
    entry[1] = _log_add(entry[1], label_score)


Prefix = tuple[int, ...]
# An utterance's kept prefixes: prefix -> (log P(prefix, ends in blank), ends in a label).
Beams = dict[Prefix, tuple[float, float]]


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    beam_size: int = 8,
    blank: int = 0,
    labels_per_frame: int = 0,
    lm: PrefixLMScorer | None = None,
) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance.

    Args:
      log_probs: [T, V] per-frame log-probabilities (real frames only).
      beam_size: prefixes kept after each frame.
      blank: the blank label.
      labels_per_frame: consider only this many most probable labels per frame (plus blank
        and the prefixes' last labels); 0 = all labels. Pruning speeds up large vocabularies.
      lm: a fused language model's scorer, made for this utterance (its prefixes are the
        label tuples); None = no fusion.

    Returns:
      Up to ``beam_size`` (labels, score) pairs, best first; the score is the log-probability
      summed over every alignment of the labels, plus the fused scores with ``lm``.
    """
    return _lockstep_search(
        [log_probs], beam_size, blank, labels_per_frame, lm, lambda _, prefix: prefix
    )[0]


def _lockstep_search(
    utterances: list[torch.Tensor],
    beam_size: int,
    blank: int,
    labels_per_frame: int,
    lm: PrefixLMScorer | None,
    lm_key: Callable[[int, Prefix], tuple[int, ...]],
) -> list[list[tuple[list[int], float]]]:
    """Prefix beam search over several utterances, a frame of each at a time, so that one
    call of ``lm`` scores the new prefixes of all of them (``lm_key(u, prefix)`` names
    utterance u's prefix to the scorer). Returns each utterance's results as
    :func:`ctc_prefix_beam_search` does."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    frames = [u.detach().float().cpu() for u in utterances]
    beams: list[Beams] = [{(): (0.0, NEG_INF)} for _ in frames]
    # prefix -> its fused score: weight * log P_lm(prefix) + length_bonus * |prefix|
    fused: list[dict[Prefix, float]] = [{(): 0.0} for _ in frames]
    for t in range(max(f.shape[0] for f in frames)):
        extensions = None
        if lm is not None:  # every kept prefix, so the scorer keeps those that are done too
            keys = [lm_key(u, prefix) for u, kept in enumerate(beams) for prefix in kept]
            extensions = lm.next_scores(keys)
        for u, utterance in enumerate(frames):
            if t >= utterance.shape[0]:
                continue
            lm_scores = None
            if extensions is not None:
                lm_scores = {p: extensions[lm_key(u, p)] for p in beams[u]}
            beams[u], fused[u] = _advance(
                beams[u],
                fused[u],
                utterance[t],
                beam_size,
                blank,
                labels_per_frame,
                lm_scores,
                0.0 if lm is None else lm.length_bonus,
            )
    if lm is not None:
        lm.next_scores([lm_key(u, prefix) for u, kept in enumerate(beams) for prefix in kept])
        fused = [
            {p: score + lm.end_score(lm_key(u, p)) for p, score in scores.items()}
            for u, scores in enumerate(fused)
        ]
    results = []
    for kept, scores in zip(beams, fused, strict=True):
        ranked = [(list(p), _log_add(b, n) + scores[p]) for p, (b, n) in kept.items()]
        results.append(sorted(ranked, key=lambda item: item[1], reverse=True))
    return results


def _advance(
    beams: Beams,
    fused: dict[Prefix, float],
    frame: torch.Tensor,
    beam_size: int,
    blank: int,
    labels_per_frame: int,
    lm_scores: dict[Prefix, list[float]] | None,
    length_bonus: float,
) -> tuple[Beams, dict[Prefix, float]]:
    """One frame [V] of prefix beam search: the ``beam_size`` best prefixes after it and
    their fused scores (``lm_scores``: the fused [V] scores of each kept prefix's next label,
    or None without a language model)."""
    scores = frame.tolist()
    vocab = len(scores)
    if 0 < labels_per_frame < vocab:
        candidates = set(frame.topk(labels_per_frame).indices.tolist())
        candidates |= {prefix[-1] for prefix in beams if prefix}
    else:
        candidates = set(range(vocab))
    candidates.discard(blank)
    next_beams: dict[Prefix, list[float]] = {}
    next_fused = dict(fused)
    if lm_scores is not None:
        for prefix in beams:
            for label in candidates:
                next_fused.setdefault(
                    prefix + (label,), fused[prefix] + lm_scores[prefix][label] + length_bonus
                )
    for prefix, (p_blank, p_label) in beams.items():
        total = _log_add(p_blank, p_label)
        _add(next_beams, prefix, total + scores[blank], NEG_INF)
        last = prefix[-1] if prefix else None
        for label in candidates:
            score = scores[label]
            if label == last:
                # A repeat stays the same prefix unless a blank separated the two.
                _add(next_beams, prefix, NEG_INF, p_label + score)
                _add(next_beams, prefix + (label,), NEG_INF, p_blank + score)
            else:
                _add(next_beams, prefix + (label,), NEG_INF, total + score)
    ranked = sorted(
        next_beams.items(),
        key=lambda item: _log_add(item[1][0], item[1][1]) + next_fused.get(item[0], 0.0),
        reverse=True,
    )
    kept = {prefix: (b, n) for prefix, (b, n) in ranked[:beam_size]}
    return kept, {prefix: next_fused.get(prefix, 0.0) for prefix in kept}


def ctc_beam_decode(
    log_probs: torch.Tensor,
    paddings: torch.Tensor,
    beam_size: int = 8,
    blank: int = 0,
    labels_per_frame: int = 0,
    fusion: LMFusion | None = None,
) -> list[list[int]]:
    """Prefix beam search over a batch [B, T, V] with paddings [B, T], with ``fusion``'s
    language model if given; the best labels each. The B searches run in lockstep, so that
    each language model step serves the new prefixes of all of them."""
    lengths = (1.0 - paddings).sum(dim=1).round().long().tolist()
    utterances = [row[:length] for row, length in zip(log_probs, lengths, strict=True)]
    lm = None
    if fusion is not None:
        roots = [(u,) for u in range(len(utterances))]
        lm = PrefixLMScorer(fusion, max(lengths, default=0), roots=roots)
    results = _lockstep_search(
        utterances, beam_size, blank, labels_per_frame, lm, lambda u, prefix: (u, *prefix)
    )
    return [ranked[0][0] for ranked in results]


def ctc_decode(
    log_probs: torch.Tensor,
    paddings: torch.Tensor,
    decoder: str,
    beam_size: int = 8,
    blank: int = 0,
    labels_per_frame: int = 0,
    fusion: LMFusion | None = None,
) -> list[list[int]]:
    """``decoder`` "greedy" (best path) or "beam" (prefix beam search, with ``fusion``'s
    language model if given) over [B, T, V] log-probs with paddings [B, T]; the best labels
    of each row."""
    if decoder == "greedy":
        if fusion is not None:
            raise ValueError("language model fusion needs the beam decoder, not greedy")
        return ctc_greedy_decode(log_probs, paddings, blank)
    if decoder == "beam":
        return ctc_beam_decode(log_probs, paddings, beam_size, blank, labels_per_frame, fusion)
    raise ValueError(f"CTC decoder {decoder!r}; expected greedy or beam")
