"""CTC prefix scores of every next label, for joint CTC/attention beam search.

An attention decoder's beam search can add, for each hypothesis h and candidate label c, the
CTC log-probability that the frames begin with h + c (Watanabe et al. 2017, "Hybrid
CTC/Attention Architecture for End-to-End Speech Recognition", section 4; ESPnet's
``CTCPrefixScore``)::

    score(c | h) = (1 - w) * log P_att(c | h, X) + w * (psi(h + c) - psi(h))

where psi(g) is the log of the CTC probability of all frame paths whose labels start with g,
and psi(h + EOS) is that of the labels being exactly h. The CTC term keeps the hypothesis
aligned with the audio: a label the frames do not support, a repeated phrase or an early end
costs what the CTC head says it does.

The forward variables of a prefix g, over frames t = -1 ... T - 1 (t = -1 before any frame):

    r_t^n(g): log P(frames 0..t emit g, frame t emits the last label of g)
    r_t^b(g): log P(frames 0..t emit g, frame t emits blank)

With x_t(c) the CTC log-posterior of c at frame t and phi_t(g, c) = r_t^b(g) (+) r_t^n(g)
((+) is log-add; r_t^n(g) is left out when c is the last label of g, which needs a blank
between two equal labels):

    r_t^n(g + c) = (r_{t-1}^n(g + c) (+) phi_{t-1}(g, c)) + x_t(c)
    r_t^b(g + c) = (r_{t-1}^b(g + c) (+) r_{t-1}^n(g + c)) + x_t(blank)
    psi(g + c)   = (+)_t  phi_{t-1}(g, c) + x_t(c)
    psi(g + EOS) = r_{T-1}^n(g) (+) r_{T-1}^b(g)

from r_{-1}^b(empty) = 0, r_{-1}^n = -inf, r_{-1}(g) = -inf for a non-empty g. Padded frames
get x_t(blank) = 0 and x_t(c) = -inf, which carries r_{T-1} of the real frames to the end.
A prefix's probability never grows as it extends, so every score is <= 0 and beam search's
early stopping still holds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.core.nested_map import NestedMap


class CtcPrefixScorer:
    """Scores next labels by CTC prefix probability, for beam search (see the module doc).

    Every call scores all V labels of all N hypotheses, looping over the T frames: O(T * N *
    V) a step, fine for character or small subword vocabularies.
    """

    def __init__(self, weight: float, blank_id: int, eos_id: int, never_ids: tuple[int, ...]):
        """``weight``: w of the module doc (multiplies the CTC term); ``blank_id``: the CTC
        blank; ``eos_id``: the label that ends a hypothesis (scored as the whole labels being
        the prefix); ``never_ids``: labels the search may never emit (e.g. BOS): -inf."""
        self.weight = weight
        self.blank_id = blank_id
        self.eos_id = eos_id
        self.never_ids = never_ids

    def init_state(self, log_probs: Tensor, paddings: Tensor) -> NestedMap:
        """The state of B empty hypotheses.

        Args:
          log_probs: [B, T, V] CTC log-posteriors of each frame.
          paddings: [B, T], 1.0 = padded frame.

        Returns:
          NestedMap(x [T, B, V] frame log-posteriors in float64 (padded frames blank with
          probability 1), r [T + 1, N, 2] forward variables (n, b) of each hypothesis' prefix
          at t = -1 ... T - 1, psi [N] its prefix score (0 for the empty prefix), last [N]
          its last label (-1 for none), beam_size 1).
        """
        x = log_probs.double().transpose(0, 1).clone()  # [T, B, V]
        padded = paddings.transpose(0, 1) > 0.5
        x.masked_fill_(padded[:, :, None], -torch.inf)
        x[:, :, self.blank_id].masked_fill_(padded, 0.0)
        frames, batch = x.shape[:2]
        r = x.new_full((frames + 1, batch, 2), -torch.inf)
        r[0, :, 1] = 0.0
        r[1:, :, 1] = x[:, :, self.blank_id].cumsum(0)  # the empty prefix: blanks only
        return NestedMap(
            x=x,
            r=r,
            psi=x.new_zeros(batch),
            last=torch.full((batch,), -1, dtype=torch.long, device=x.device),
            beam_size=1,
        )

    def extend_step(self, state: NestedMap, labels: Tensor) -> tuple[Tensor, NestedMap]:
        """Feeds one label per row and scores every next label.

        Args:
          state: the state of N rows; a row's prefix is its labels before ``labels``.
          labels: [N] long; the label each row adds (BOS at the first step adds nothing).

        Returns:
          ([N, V] float32, weight * (psi(prefix + c) - psi(prefix)) for each label c, the
          state of the N longer prefixes).
        """
        state = self._advance(state, labels)
        x = state.x.repeat_interleave(state.beam_size, dim=1)  # [T, N, V]
        r_prev = state.r  # [T + 1, N, 2]
        frames, _, vocab = x.shape
        # phi_{t-1}(g, c) for t = 0 ... T - 1: [T, N, V].
        phi = r_prev[:-1, :, 1, None].expand(-1, -1, vocab).clone()
        r_n = r_prev[:-1, :, 0]
        not_repeat = torch.ones_like(phi[0], dtype=torch.bool)
        has_last = state.last >= 0
        not_repeat[has_last, state.last[has_last]] = False
        phi = torch.where(not_repeat, torch.logaddexp(phi, r_n[:, :, None]), phi)
        entering = phi + x  # [T, N, V]: mass that emits c first at frame t
        psi = torch.logsumexp(entering, dim=0)  # [N, V]
        # For EOS: the prefix is the whole label sequence.
        psi[:, self.eos_id] = torch.logaddexp(r_prev[-1, :, 0], r_prev[-1, :, 1])
        psi[:, list(self.never_ids)] = -torch.inf
        psi[:, self.blank_id] = -torch.inf
        # Forward variables of every extension, kept until the search picks its labels.
        r_n_next = torch.empty_like(entering)
        r_b_next = torch.empty_like(entering)
        n = entering.new_full(entering.shape[1:], -torch.inf)  # r_{-1}(g + c)
        b = n.clone()
        blank = x[:, :, self.blank_id, None]
        for t in range(frames):
            n, b = torch.logaddexp(n + x[t], entering[t]), torch.logaddexp(b, n) + blank[t]
            r_n_next[t], r_b_next[t] = n, b
        state.candidates = NestedMap(psi=psi, r_n=r_n_next, r_b=r_b_next)
        scores = (psi - state.psi[:, None]).clamp(max=0.0)
        # A prefix the frames cannot emit (psi = -inf: a beam that had no finite extension
        # left, or an example that stopped) has only impossible extensions, not NaN ones.
        scores.masked_fill_(torch.isneginf(state.psi)[:, None], -torch.inf)
        return (self.weight * scores).float(), state

    def _advance(self, state: NestedMap, labels: Tensor) -> NestedMap:
        """The state of each row's prefix + its label, from the candidates of the last step
        (the first step, before any candidates, keeps the empty prefixes)."""
        candidates = state.get("candidates")
        if candidates is None:
            return state
        rows = torch.arange(labels.shape[0], device=labels.device)
        minus_inf = state.r.new_full((1, labels.shape[0]), -torch.inf)
        r = torch.stack(
            [
                torch.cat([minus_inf, candidates.r_n[:, rows, labels]]),
                torch.cat([minus_inf, candidates.r_b[:, rows, labels]]),
            ],
            dim=-1,
        )
        return NestedMap(
            x=state.x,
            r=r,
            psi=candidates.psi[rows, labels],
            last=labels.clone(),
            beam_size=state.beam_size,
        )

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """K copies of each row, row ``b * K + k`` from row b (before the first label)."""
        rows = torch.arange(state.r.shape[1]).repeat_interleave(beam_size)
        return self._rows(state, rows, state.beam_size * beam_size)

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        """Rows ``indices`` [M] of a state of N rows; K beams per example stay K: the
        frames follow the examples of rows ``indices[::K]``."""
        return self._rows(state, indices, state.beam_size)

    def _rows(self, state: NestedMap, indices: Tensor, beam_size: int) -> NestedMap:
        """Rows ``indices`` of the state (and of its pending candidates), ``beam_size`` rows
        an example afterwards; the frames are gathered only when the examples change."""
        indices = indices.to(state.r.device)
        examples = indices.view(-1, beam_size)[:, 0] // state.beam_size
        x = state.x
        if examples.shape[0] != x.shape[1] or not torch.equal(
            examples, torch.arange(x.shape[1], device=x.device)
        ):
            x = x.index_select(1, examples)
        out = NestedMap(
            x=x,
            r=state.r.index_select(1, indices),
            psi=state.psi.index_select(0, indices),
            last=state.last.index_select(0, indices),
            beam_size=beam_size,
        )
        candidates = state.get("candidates")
        if candidates is not None:
            out.candidates = NestedMap(
                psi=candidates.psi.index_select(0, indices),
                r_n=candidates.r_n.index_select(1, indices),
                r_b=candidates.r_b.index_select(1, indices),
            )
        return out
