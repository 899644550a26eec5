"""Tests for batched greedy decoding."""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.core.nested_map import NestedMap
from seqlab.decoding.greedy import greedy_search

BOS, EOS, A, B = 0, 1, 2, 3


class BiasedTableModel:
    """Next-token logits: a row of a [V, V] table chosen by the last token plus a per-row bias.

    The bias [N, V] lives in the state, so that rows of a batch decode differently.
    """

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits
        self.num_calls = 0

    def extend_step(self, state: NestedMap, ids: Tensor) -> tuple[Tensor, NestedMap, None]:
        self.num_calls += 1
        return (self.logits[ids] + state.bias).log_softmax(-1), state, None

    def reorder_state(self, state: NestedMap, indices: Tensor) -> NestedMap:
        return state.transform(lambda x: x[indices])


def chain_logits() -> Tensor:
    """Prefers BOS -> a -> b -> EOS."""
    logits = torch.zeros(4, 4)
    logits[BOS, A] = logits[A, B] = logits[B, EOS] = 2.0
    return logits


def test_follows_most_likely_token_per_row() -> None:
    model = BiasedTableModel(chain_logits())
    bias = torch.zeros(3, 4)
    bias[1, EOS] = 5.0  # row 1 ends at once
    bias[2, A] = 5.0  # row 2 repeats a until its maximum length
    state = NestedMap(bias=bias)
    ids = greedy_search(model, state, BOS, EOS, 3, max_lengths=torch.tensor([5, 5, 4]))
    assert ids == [[A, B], [], [A, A, A, A]]
    assert model.num_calls == 4  # stops once every row has finished


def test_max_lengths_respected() -> None:
    logits = torch.zeros(4, 4)
    logits[:, A] = 3.0  # never ends by itself
    model = BiasedTableModel(logits)
    state = NestedMap(bias=torch.zeros(3, 4))
    ids = greedy_search(model, state, BOS, EOS, 3, max_lengths=torch.tensor([0, 1, 3]))
    assert ids == [[], [A], [A, A, A]]
    assert model.num_calls == 3


def test_batch_equals_single_examples() -> None:
    torch.manual_seed(0)
    model = BiasedTableModel(torch.randn(6, 6))
    bias = 2.0 * torch.randn(5, 6)
    max_lengths = torch.tensor([7, 3, 0, 7, 5])
    batch = greedy_search(model, NestedMap(bias=bias), BOS, EOS, 5, max_lengths)
    for i in range(5):
        state = NestedMap(bias=bias[i : i + 1])
        assert greedy_search(model, state, BOS, EOS, 1, max_lengths[i : i + 1]) == batch[i : i + 1]
