"""Tests for batched beam search on hand-made and tiny random incremental models."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from seqlab.core.config import ConfigError
from seqlab.core.layer import lengths_to_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.decoding.beam_search import BeamSearch, coverage_penalty, length_penalty
from seqlab.decoding.greedy import greedy_search

BOS, EOS, A, B = 0, 1, 2, 3


class TableModel:
    """Next-token probs and attention probs that depend only on the last token.

    Args:
      probs: [V, V] row i = distribution of the token after token i.
      attention: [V, S] row i = attention probs of the step that is fed token i.
    """

    def __init__(self, probs: Tensor, attention: Tensor | None = None) -> None:
        self.log_probs = probs.log()
        self.attention = attention
        self.num_calls = 0

    def init_state(self, batch_size: int) -> NestedMap:
        return NestedMap(last_ids=torch.full((batch_size,), BOS))

    def extend_step(self, state: NestedMap, ids: Tensor) -> tuple[Tensor, NestedMap, Tensor | None]:
        self.num_calls += 1
        attention = None if self.attention is None else self.attention[ids]
        return self.log_probs[ids], NestedMap(last_ids=ids), attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return state.transform(lambda x: x.repeat_interleave(beam_size, 0))

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        return state.transform(lambda x: x[indices])


class ToyAttentionGRU(nn.Module):
    """A random GRU decoder with dot-product attention over a given source memory."""

    def __init__(self, vocab_size: int = 11, dim: int = 8) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.cell = nn.GRUCell(dim, dim)
        self.proj = nn.Linear(2 * dim, vocab_size)
        with torch.no_grad():  # so that some hypotheses end before their maximum length
            self.proj.bias[EOS] += 0.5

    def init_state(self, memory: Tensor, lengths: Tensor) -> NestedMap:
        """memory [B, S, D], lengths [B]."""
        paddings = lengths_to_paddings(lengths, memory.shape[1])
        hidden = torch.zeros(memory.shape[0], memory.shape[2])
        return NestedMap(hidden=hidden, memory=memory, paddings=paddings)

    def extend_step(self, state: NestedMap, ids: Tensor) -> tuple[Tensor, NestedMap, Tensor]:
        hidden = self.cell(self.embedding(ids), state.hidden)
        logits = torch.einsum("nsd,nd->ns", state.memory, hidden)
        attention = logits.masked_fill(state.paddings > 0, -math.inf).softmax(-1)
        context = torch.einsum("ns,nsd->nd", attention, state.memory)
        log_probs = self.proj(torch.cat([hidden, context], -1)).log_softmax(-1)
        new_state = NestedMap(hidden=hidden, memory=state.memory, paddings=state.paddings)
        return log_probs, new_state, attention

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return state.transform(lambda x: x.repeat_interleave(beam_size, 0))

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        return state.transform(lambda x: x.index_select(0, indices))


def make_search(**overrides: Any) -> BeamSearch:
    """Unless overridden: no length penalty, and the maximum length is the offset."""
    defaults = {"length_penalty_alpha": 0.0, "max_decode_length_ratio": 0.0}
    return BeamSearch.Config(**{**defaults, **overrides}).build()


def table(rows: dict[int, dict[int, float]], vocab_size: int = 4) -> Tensor:
    """[V, V] probs from {last token: {next token: prob}}; missing rows are uniform."""
    probs = torch.full((vocab_size, vocab_size), 1.0 / vocab_size)
    for last, row in rows.items():
        probs[last] = 0.0
        for token, prob in row.items():
            probs[last, token] = prob
    return probs


def test_finds_best_sequence_that_greedy_misses() -> None:
    # Greedy: a (0.6) then EOS (0.34) -> 0.204. Best: b (0.4) then EOS (0.9) -> 0.36.
    probs = table(
        {BOS: {A: 0.6, B: 0.4}, A: {EOS: 0.34, A: 0.33, B: 0.33}, B: {EOS: 0.9, A: 0.05, B: 0.05}}
    )
    model = TableModel(probs)
    lengths = torch.tensor([10])
    assert greedy_search(model, model.init_state(1), BOS, EOS, 1, lengths) == [[A]]

    model = TableModel(probs)
    search = make_search(beam_size=2, max_decode_length_offset=10)
    result = search.search(model, model.init_state(1), BOS, EOS, 1, lengths, max_length=10)
    assert result.best_ids == [[B]]
    torch.testing.assert_close(result.best_log_probs, torch.tensor([math.log(0.36)]))
    torch.testing.assert_close(result.best_scores, result.best_log_probs)  # alpha = beta = 0
    # Early stopping: after step 2 the live beams (0.198) cannot beat the finished 0.36.
    assert model.num_calls == 2


def test_length_penalty_changes_choice() -> None:
    # [] has prob 0.5 and |Y| = 1; [a] has prob 0.45 and |Y| = 2.
    probs = table({BOS: {EOS: 0.5, A: 0.45, B: 0.05}, A: {EOS: 1.0}, B: {EOS: 1.0}})
    lengths = torch.tensor([5])
    for alpha, expected_ids, expected_score in [
        (0.0, [], math.log(0.5)),
        (1.0, [A], math.log(0.45) / (7 / 6)),  # -0.684 > log(0.5) / 1 = -0.693
    ]:
        model = TableModel(probs)
        search = make_search(beam_size=2, length_penalty_alpha=alpha, max_decode_length_offset=5)
        result = search.search(model, model.init_state(1), BOS, EOS, 1, lengths, max_length=5)
        assert result.best_ids == [expected_ids]
        torch.testing.assert_close(result.best_scores, torch.tensor([expected_score]))
    assert length_penalty(torch.tensor([1, 4]), 0.6).tolist() == pytest.approx([1.0, 1.5**0.6])


def test_coverage_penalty_formula() -> None:
    # Position 0 is over-covered (clipped to 1), position 2 is padding and does not count.
    coverage = torch.tensor([[1.1, 0.4, 0.7], [0.5, 0.3, 0.2]])
    paddings = torch.tensor([[0.0, 0.0, 1.0]])
    expected = [0.5 * math.log(0.4), 0.5 * (math.log(0.5) + math.log(0.3))]
    assert coverage_penalty(coverage, paddings, 0.5).tolist() == pytest.approx(expected)


def test_coverage_penalty_changes_choice() -> None:
    # [] (prob 0.55) attends [0.5, 0.3 | 0.2]; [a] (prob 0.45) covers [0.5+0.6, 0.3+0.1 | 0.5].
    probs = table({BOS: {EOS: 0.55, A: 0.45}, A: {EOS: 1.0}})
    attention = torch.tensor([[0.5, 0.3, 0.2], [1.0, 0.0, 0.0], [0.6, 0.1, 0.3], [1.0, 0.0, 0.0]])
    source_lengths = torch.tensor([2])
    for beta, expected_ids, expected_log_prob, expected_score in [
        (0.0, [], math.log(0.55), math.log(0.55)),
        (1.0, [A], math.log(0.45), math.log(0.45) + math.log(1.0) + math.log(0.4)),
    ]:  # with beta = 1, [] scores log(0.55) + log(0.5) + log(0.3) = -2.495 < -1.715
        model = TableModel(probs, attention)
        search = make_search(beam_size=2, coverage_penalty_beta=beta, max_decode_length_offset=3)
        result = search.search(model, model.init_state(1), BOS, EOS, 1, source_lengths, 3)
        assert result.best_ids == [expected_ids]
        torch.testing.assert_close(result.best_scores, torch.tensor([expected_score]))
        torch.testing.assert_close(result.best_log_probs, torch.tensor([expected_log_prob]))


def test_matches_exhaustive_search() -> None:
    # With K above the number of candidates per step, beam search is exhaustive: its n-best
    # list must equal the top of all 40 hypotheses of up to 3 tokens over {BOS, a, b}.
    torch.manual_seed(0)
    probs = torch.rand(4, 4).softmax(-1)
    attention = torch.rand(4, 3).softmax(-1)
    source_lengths = torch.tensor([2])
    alpha, beta, max_length = 0.6, 0.3, 3
    model = TableModel(probs, attention)
    search = make_search(
        beam_size=40,
        num_hyps_to_return=5,
        length_penalty_alpha=alpha,
        coverage_penalty_beta=beta,
        max_decode_length_offset=max_length,
    )
    result = search.search(model, model.init_state(1), BOS, EOS, 1, source_lengths, max_length)

    paddings = lengths_to_paddings(source_lengths, 3)[0]
    hyps = []
    for length in range(max_length + 1):
        for tokens in itertools.product([BOS, A, B], repeat=length):
            inputs, outputs = [BOS, *tokens], [*tokens, EOS]
            log_prob = float(sum(probs[i, o].log() for i, o in zip(inputs, outputs, strict=True)))
            coverage = attention[inputs].sum(0)
            score = log_prob / length_penalty(length + 1, alpha) + float(
                coverage_penalty(coverage, paddings, beta)
            )
            hyps.append((score, log_prob, list(tokens)))
    hyps.sort(key=lambda h: -h[0])
    assert result.ids == [[h[2] for h in hyps[:5]]]
    torch.testing.assert_close(result.scores, torch.tensor([[h[0] for h in hyps[:5]]]))
    torch.testing.assert_close(result.log_probs, torch.tensor([[h[1] for h in hyps[:5]]]))


def decode_gru(search: BeamSearch, model: ToyAttentionGRU, memory: Tensor, lengths: Tensor):
    state = model.init_state(memory, lengths)
    return search.search(model, state, BOS, EOS, memory.shape[0], lengths, max_length=6)


def test_beam_size_one_equals_greedy() -> None:
    torch.manual_seed(0)
    model = ToyAttentionGRU()
    memory, lengths = torch.randn(8, 5, 8), torch.tensor([5, 3, 4, 1, 2, 5, 5, 2])
    search = make_search(beam_size=1, max_decode_length_ratio=1.0, max_decode_length_offset=2)
    result = decode_gru(search, model, memory, lengths)
    max_lengths = search.max_lengths(lengths, 6)
    state = model.init_state(memory, lengths)
    assert result.best_ids == greedy_search(model, state, BOS, EOS, 8, max_lengths)
    # The test sees hypotheses that end by EOS and by reaching their maximum length.
    ends = [
        len(ids) < limit for ids, limit in zip(result.best_ids, max_lengths.tolist(), strict=True)
    ]
    assert any(ends) and not all(ends)


def test_batch_equals_single_examples() -> None:
    torch.manual_seed(0)
    model = ToyAttentionGRU()
    memory, lengths = torch.randn(4, 5, 8), torch.tensor([4, 2, 5, 1])
    search = make_search(
        beam_size=3,
        num_hyps_to_return=2,
        length_penalty_alpha=0.6,
        coverage_penalty_beta=0.2,
        max_decode_length_ratio=1.0,
        max_decode_length_offset=2,
    )
    batch = decode_gru(search, model, memory, lengths)
    for i, length in enumerate(lengths.tolist()):
        # Alone, the example's memory is cut to its own length: padding must not matter.
        single = decode_gru(search, model, memory[i : i + 1, :length], lengths[i : i + 1])
        assert single.ids == batch.ids[i : i + 1]
        torch.testing.assert_close(single.scores, batch.scores[i : i + 1])
        torch.testing.assert_close(single.log_probs, batch.log_probs[i : i + 1])


def test_max_length_respected() -> None:
    # EOS is very unlikely, so with alpha > 0 the best hypotheses run to their maximum length.
    probs = table({i: {EOS: 1e-6, A: 1 - 2e-6, B: 1e-6} for i in range(4)})
    source_lengths = torch.tensor([0, 1, 3, 5])
    model = TableModel(probs)
    search = make_search(
        beam_size=3,
        num_hyps_to_return=3,
        length_penalty_alpha=0.6,
        max_decode_length_ratio=1.0,
        max_decode_length_offset=1,
    )
    result = search.search(model, model.init_state(4), BOS, EOS, 4, source_lengths, max_length=5)
    expected = [1, 2, 4, 5]  # min(1.0 * source length + 1, 5)
    assert search.max_lengths(source_lengths, 5).tolist() == expected
    assert [len(ids) for ids in result.best_ids] == expected
    for nbest, limit in zip(result.ids, expected, strict=True):
        assert all(len(ids) <= limit for ids in nbest)
    assert torch.isfinite(result.scores).all()
    assert (result.scores[:, :-1] >= result.scores[:, 1:]).all()  # best first


def test_coverage_needs_attention() -> None:
    model = TableModel(table({}))
    search = make_search(coverage_penalty_beta=0.1, max_decode_length_offset=3)
    with pytest.raises(ValueError, match="attention"):
        search.search(model, model.init_state(1), BOS, EOS, 1, torch.tensor([2]), 3)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="num_hyps_to_return"):
        BeamSearch.Config(beam_size=2, num_hyps_to_return=3).build()
    with pytest.raises(ConfigError, match="beam_size"):
        BeamSearch.Config(beam_size=0).build()
    with pytest.raises(ConfigError, match="length_penalty_alpha"):
        BeamSearch.Config(length_penalty_alpha=-0.5).build()
