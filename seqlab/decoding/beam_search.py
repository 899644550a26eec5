"""Batched beam search over any IncrementalModel, with GNMT length and coverage penalties.

All B * K beams advance together: a step is one ``extend_step`` call plus a fixed number of
tensor ops, whatever B and K are. Beam k of example b lives in row ``b * K + k``: the search
expands the model's state once with ``expand_state``, and ``reorder_state`` then only moves
beams within their example.

Live beams all have the same length, so they are ranked by their log-prob. A hypothesis that
ends in EOS gets its final score (Wu et al. 2016, "Google's Neural Machine Translation System")

    score = log P(Y) / lp(Y) + cp(X; Y)
    lp(Y) = ((5 + |Y|) / 6) ** alpha                    |Y| counts the output tokens and EOS
    cp(X; Y) = beta * sum_i log(min(sum_j p_ij, 1))     over the real source positions i

and competes for a place in its example's n-best list of N = num_hyps_to_return entries.
As in fairseq and Lingvo, a step looks at the 2K best extensions of the K live beams: those
among the first K that end in EOS finish, and the K best that do not end in EOS stay live.
With K = 1, alpha = 0 and beta = 0 this is greedy search.

Early stopping: an example stops when its n-best list is full and no live beam can beat its
worst entry. Log-probs only fall as a hypothesis grows, lp grows with length (alpha >= 0) and
cp <= 0, so ``best live log-prob / lp(longest allowed |Y|)`` bounds every score still to come;
the result is the same as running every example to its maximum length. (A model whose step
scores may be positive, such as one with a fused length bonus, passes the most a step can add
as ``max_step_gain``, and the bound allows for it.) At that length EOS is
forced, so every example stops. The search ends when all examples have stopped.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from seqlab.core.config import Config, ConfigError, Configurable, param
from seqlab.core.layer import lengths_to_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.decoding.step_model import IncrementalModel

# Coverage floor: a source position that got no attention costs beta * log(1e-10), not -inf.
_MIN_COVERAGE = 1e-10


def length_penalty(lengths: Tensor | int, alpha: float) -> Tensor | float:
    """GNMT length penalty ``((5 + |Y|) / 6) ** alpha``.

    Args:
      lengths: [...] hypothesis lengths |Y|, counting EOS.
      alpha: exponent; 0 gives 1 (no normalization).

    Returns:
      [...] penalties that a hypothesis' log-prob is divided by.
    """
    return ((5.0 + lengths) / 6.0) ** alpha


def coverage_penalty(coverage: Tensor, source_paddings: Tensor, beta: float) -> Tensor:
    """GNMT coverage penalty ``beta * sum_i log(min(coverage_i, 1))`` over real positions.

    Args:
      coverage: [..., S] attention probabilities of each source position summed over steps.
      source_paddings: [..., S] broadcastable to ``coverage``, 1.0 = padded source position.
      beta: weight; 0 gives 0.

    Returns:
      [...] penalties <= 0 that are added to the length-normalized log-prob.
    """
    log_coverage = coverage.clamp(min=_MIN_COVERAGE, max=1.0).log()
    return beta * (log_coverage * (1.0 - source_paddings)).sum(-1)


@dataclasses.dataclass
class BeamSearchResult:
    """The n-best finished hypotheses of each example, best first.

    Attributes:
      ids: [B][N] token id lists, without BOS and EOS.
      scores: [B, N] final scores (log-prob / lp + cp); -inf marks an empty slot, possible
        only when the vocabulary is smaller than the beam or the model gives -inf log-probs.
      log_probs: [B, N] log-probs of the hypotheses, EOS included.
    """

    ids: list[list[list[int]]]
    scores: Tensor
    log_probs: Tensor

    @property
    def best_ids(self) -> list[list[int]]:
        """[B] token id lists of the best hypothesis of each example."""
        return [nbest[0] for nbest in self.ids]

    @property
    def best_scores(self) -> Tensor:
        """[B] scores of the best hypotheses."""
        return self.scores[:, 0]

    @property
    def best_log_probs(self) -> Tensor:
        """[B] log-probs of the best hypotheses."""
        return self.log_probs[:, 0]


# Batch compaction (models with ``select_examples``): the examples that have stopped leave the
# batch once they are at least this fraction of it. Each compaction copies the filled caches
# of the examples that stay, so it is not done for every single example that stops.
COMPACT_FRACTION = 0.25


def _store(
    final: NestedMap,
    examples: Tensor,
    ids: Tensor,
    lengths: Tensor,
    scores: Tensor,
    log_probs: Tensor,
    rows: Tensor | None = None,
) -> None:
    """Writes n-best lists into ``final`` at the original ``examples`` ([B'] long).

    ``ids`` [B, N, T], ``lengths``, ``scores``, ``log_probs`` [B, N] are those of the examples
    decoded now; ``rows`` [B] boolean picks which of them to write (all when None).
    """
    values = (ids, lengths, scores, log_probs)
    if rows is not None:
        values = tuple(v[rows] for v in values)
    for name, value in zip(("ids", "lengths", "scores", "log_probs"), values, strict=True):
        final[name][examples] = value


def _gather_beams(values: Tensor, beams: Tensor) -> Tensor:
    """Picks beams per example: values [B, K, ...], beams [B, M] -> [B, M, ...]."""
    index = beams.view(*beams.shape, *[1] * (values.dim() - 2))
    return values.gather(1, index.expand(-1, -1, *values.shape[2:]))


class BeamSearch(Configurable):
    """Batched beam search with length normalization and coverage penalty (see module doc)."""

    @dataclasses.dataclass
    class Config(Config):
        """Beam search settings."""

        beam_size: int = param(4, doc="Live hypotheses K kept per example.", at_least=1)
        length_penalty_alpha: float = param(
            0.6,
            doc="GNMT length penalty exponent: lp = ((5 + |Y|) / 6) ** alpha; 0 disables.",
            at_least=0,
        )
        coverage_penalty_beta: float = param(
            0.0,
            doc="GNMT coverage penalty weight: beta * sum_i log(min(cov_i, 1)); 0 disables.",
            at_least=0,
        )
        max_decode_length_ratio: float = param(
            2.0,
            doc="Max output tokens (EOS not counted) = ratio * source length + offset.",
            at_least=0,
        )
        max_decode_length_offset: int = param(
            10,
            doc="Added to ratio * source length; the sum is rounded down and capped.",
            at_least=0,
        )
        num_hyps_to_return: int = param(
            1, doc="Size N of the n-best list; 1 <= N <= beam_size.", at_least=1
        )

    def __init__(self, config: BeamSearch.Config) -> None:
        if config.beam_size < 1:
            raise ConfigError(f"beam_size must be >= 1, got {config.beam_size}")
        if not 1 <= config.num_hyps_to_return <= config.beam_size:
            raise ConfigError(
                f"num_hyps_to_return must be in [1, beam_size={config.beam_size}], "
                f"got {config.num_hyps_to_return}"
            )
        if config.length_penalty_alpha < 0 or config.coverage_penalty_beta < 0:
            raise ConfigError(
                "length_penalty_alpha and coverage_penalty_beta must be >= 0 (early stopping "
                f"relies on it), got {config.length_penalty_alpha} and "
                f"{config.coverage_penalty_beta}"
            )
        self.config = config

    def max_lengths(self, source_lengths: Tensor, max_length: int) -> Tensor:
        """[B] most output tokens (EOS not counted) per example, from [B] source lengths."""
        p = self.config
        lengths = p.max_decode_length_ratio * source_lengths.double() + p.max_decode_length_offset
        return lengths.floor().long().clamp(0, max_length)

    def _best_possible(
        self,
        best_live: Tensor,
        t: int,
        max_lengths: Tensor,
        max_step_gain: float,
        longest_penalty: Tensor,
    ) -> Tensor:
        """[B] bound on the final score of any hypothesis still to finish after step t.

        With no gain, scores only fall, so the best live log-prob over the largest length
        penalty bounds them. With a gain g per step, the at most L - t steps left to an
        example of maximum length L (EOS not counted) bring a score of at most
        ``(live + g * (L - t)) / lp(|Y|)``: over the largest penalty when that sum is
        negative, over the smallest (|Y| = t + 2) otherwise.
        """
        if max_step_gain == 0:
            return best_live / longest_penalty
        highest = best_live + max_step_gain * (max_lengths - t).clamp(min=0)
        shortest_penalty = length_penalty(t + 2, self.config.length_penalty_alpha)
        return torch.where(highest < 0, highest / longest_penalty, highest / shortest_penalty)

    @torch.no_grad()
    def search(
        self,
        model: IncrementalModel,
        state: NestedMap,
        bos_id: int,
        eos_id: int,
        batch_size: int,
        source_lengths: Tensor,
        max_length: int,
        max_step_gain: float = 0.0,
    ) -> BeamSearchResult:
        """Decodes B examples with K beams each.

        Args:
          model: the decoder.
          state: its state for the B examples.
          bos_id: token fed at the first step.
          eos_id: token that ends a hypothesis.
          batch_size: B.
          source_lengths: [B] long, real source positions per example; they set each
            example's maximum length and the positions the coverage penalty counts.
          max_length: hard cap on the output tokens of a hypothesis, EOS not counted.
          max_step_gain: the most one step's score may exceed 0 (a fused length bonus);
            early stopping then allows for that gain at every remaining step.

        Returns:
          The N best finished hypotheses of each example, best first.
        """
        p = self.config
        b, k, n = batch_size, p.beam_size, p.num_hyps_to_return
        alpha, beta = p.length_penalty_alpha, p.coverage_penalty_beta
        device = source_lengths.device
        max_lengths = self.max_lengths(source_lengths, max_length)  # [B]
        limits = set(max_lengths.tolist())
        num_steps = max(limits) + 1  # the last step can only emit EOS
        longest_penalty = length_penalty(max_lengths + 1, alpha)  # [B]

        state = model.expand_state(state, k)
        select_examples = getattr(model, "select_examples", None)
        active = torch.arange(b, device=device)  # the original index of each example decoded
        ids = torch.full((b * k,), bos_id, dtype=torch.long, device=device)
        history = torch.full((b, k, num_steps), eos_id, dtype=torch.long, device=device)
        # Only beam 0 may expand at first; otherwise the beam would fill with K copies.
        live_log_probs = torch.full((b, k), -math.inf, device=device)
        live_log_probs[:, 0] = 0.0
        coverage = torch.zeros(b, k, 1, device=device)  # [B, K, S] once the first step adds
        nbest_ids = torch.full((b, n, num_steps), eos_id, dtype=torch.long, device=device)
        nbest_lengths = torch.zeros(b, n, dtype=torch.long, device=device)
        nbest_scores = torch.full((b, n), -math.inf, device=device)
        nbest_log_probs = torch.full((b, n), -math.inf, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        # The n-best lists of all B examples; an example's are written when it leaves.
        final = NestedMap(
            ids=nbest_ids.clone(),
            lengths=nbest_lengths.clone(),
            scores=nbest_scores.clone(),
            log_probs=nbest_log_probs.clone(),
        )

        for t in range(num_steps):
            step_log_probs, state, attention = model.extend_step(state, ids)
            vocab_size = step_log_probs.shape[-1]
            step_log_probs = step_log_probs.float().reshape(b, k, vocab_size)
            if t in limits:  # an example at its maximum length may only emit EOS
                not_eos = torch.arange(vocab_size, device=device) != eos_id
                force_eos = (max_lengths == t)[:, None, None] & not_eos
                step_log_probs = step_log_probs.masked_fill(force_eos, -math.inf)
            log_probs = (live_log_probs[:, :, None] + step_log_probs).view(b, k * vocab_size)
            top_log_probs, top_indices = log_probs.topk(2 * k, dim=1)  # [B, 2K], best first
            top_beams, top_ids = top_indices // vocab_size, top_indices % vocab_size
            if beta > 0:
                if attention is None:
                    raise ValueError(
                        "coverage_penalty_beta > 0 needs extend_step to return attention probs"
                    )
                coverage = coverage + attention.float().reshape(b, k, -1)

            # EOS among the K best extensions finishes a hypothesis of t tokens (|Y| = t + 1).
            ends = top_ids[:, :k] == eos_id
            end_beams = top_beams[:, :k]
            end_log_probs = top_log_probs[:, :k].masked_fill(~ends, -math.inf)
            end_scores = end_log_probs / length_penalty(t + 1, alpha)
            if beta > 0:
                source_paddings = lengths_to_paddings(source_lengths, coverage.shape[-1])
                end_coverage = _gather_beams(coverage, end_beams)
                end_scores = end_scores + coverage_penalty(
                    end_coverage, source_paddings[:, None, :], beta
                )
            nbest_scores, keep = torch.cat([nbest_scores, end_scores], 1).topk(n, dim=1)
            nbest_log_probs = torch.cat([nbest_log_probs, end_log_probs], 1).gather(1, keep)
            end_lengths = torch.full_like(end_beams, t)
            nbest_lengths = torch.cat([nbest_lengths, end_lengths], 1).gather(1, keep)
            end_ids = _gather_beams(history, end_beams)  # column t and later are still EOS
            nbest_ids = _gather_beams(torch.cat([nbest_ids, end_ids], 1), keep)

            # The K best extensions that do not end in EOS stay live.
            not_ended = top_log_probs.masked_fill(top_ids == eos_id, -math.inf)
            live_log_probs, picks = not_ended.topk(k, dim=1)
            beams, ids = top_beams.gather(1, picks), top_ids.gather(1, picks)  # [B, K]

            # An example stops when no live beam can beat the worst of its n-best (module doc).
            best_possible = self._best_possible(
                live_log_probs[:, 0], t, max_lengths, max_step_gain, longest_penalty
            )
            done |= nbest_scores[:, -1] >= best_possible
            num_done = int(done.sum())
            if num_done == b:
                break
            live_log_probs = live_log_probs.masked_fill(done[:, None], -math.inf)
            history = _gather_beams(history, beams)
            history[:, :, t] = ids
            coverage = _gather_beams(coverage, beams)
            rows = beams + k * torch.arange(b, device=device)[:, None]
            state = model.reorder_state(state, rows.view(-1))
            ids = ids.view(-1)
            if select_examples is not None and num_done >= b * COMPACT_FRACTION:
                # Batch compaction: the examples that stopped leave the batch for good.
                _store(
                    final,
                    active[done],
                    nbest_ids,
                    nbest_lengths,
                    nbest_scores,
                    nbest_log_probs,
                    done,
                )
                kept = (~done).nonzero().squeeze(1)
                state = select_examples(state, kept)
                active, max_lengths, longest_penalty, source_lengths = (
                    v.index_select(0, kept)
                    for v in (active, max_lengths, longest_penalty, source_lengths)
                )
                ids = ids.view(b, k).index_select(0, kept).view(-1)
                history, coverage, live_log_probs = (
                    v.index_select(0, kept) for v in (history, coverage, live_log_probs)
                )
                nbest_ids, nbest_lengths, nbest_scores, nbest_log_probs = (
                    v.index_select(0, kept)
                    for v in (nbest_ids, nbest_lengths, nbest_scores, nbest_log_probs)
                )
                done = done.index_select(0, kept)
                b = kept.shape[0]
                limits = set(max_lengths.tolist())

        _store(final, active, nbest_ids, nbest_lengths, nbest_scores, nbest_log_probs)
        lengths = final.lengths.masked_fill(final.scores == -math.inf, 0).tolist()
        hyps = [
            [row[:length] for row, length in zip(rows_b, lengths_b, strict=True)]
            for rows_b, lengths_b in zip(final.ids.tolist(), lengths, strict=True)
        ]
        return BeamSearchResult(ids=hyps, scores=final.scores, log_probs=final.log_probs)
