"""Batching by a token budget with length bucketing, and a resumable seeded batch stream."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def plan_batches(
    lengths: Sequence[int] | np.ndarray,
    max_tokens: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Groups example indices into batches whose padded size fits ``max_tokens``, vectorised.

    Examples are sorted by length (ties broken by a seeded permutation when ``shuffle``), cut
    greedily into batches with ``len(batch) * max_length_in_batch <= max_tokens``, and the
    batch order is shuffled. The result depends only on (lengths, max_tokens, seed, epoch).
    The loop runs over batches, not examples, so planning millions of examples takes seconds.

    Args:
      lengths: per-example length in tokens (e.g. max of source and target length).
      max_tokens: budget of padded tokens per batch; an example longer than it gets a batch
        of its own.
      seed: base seed.
      epoch: epoch number, mixed into the seed so each epoch differs.
      shuffle: if False, batches follow the sorted order (used for eval/decode).

    Returns:
      (order [N] int64: example indices sorted by length, batches [num_batches, 2] int64:
      each batch's [start, end) in ``order``, in the order the batches are to be used).
    """
    lengths_np = np.asarray(lengths, dtype=np.int64)
    n = len(lengths_np)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    order = order[np.argsort(lengths_np[order], kind="stable")]
    sorted_lengths = lengths_np[order]
    starts: list[int] = []
    start = 0
    while start < n:
        starts.append(start)
        # In ascending order the batch's longest example is its last, so a batch of k from
        # ``start`` costs sorted_lengths[start + k - 1] * k, which grows with k.
        window = max(1, max_tokens // max(int(sorted_lengths[start]), 1))
        costs = sorted_lengths[start : start + window] * np.arange(1, window + 1)[: n - start]
        start += max(1, int(np.searchsorted(costs, max_tokens, side="right")))
    begin = np.asarray(starts, dtype=np.int64)
    bounds = np.stack([begin, np.append(begin[1:], n).astype(np.int64)[: len(begin)]], axis=1)
    if shuffle:
        bounds = bounds[rng.permutation(len(bounds))]
    return order, bounds.reshape(-1, 2)


def make_batches(
    lengths: Sequence[int] | np.ndarray,
    max_tokens: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> list[list[int]]:
    """``plan_batches`` as lists of example indices; every index appears exactly once."""
    order, bounds = plan_batches(lengths, max_tokens, seed, epoch, shuffle)
    return [order[a:b].tolist() for a, b in bounds]


class BatchStream:
    """An endless, seeded stream of batches over epochs, whose position can be saved.

    The position is (epoch, index of the next batch in that epoch); restoring it continues
    the stream exactly where it stopped.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_tokens: int, seed: int) -> None:
        if len(lengths) == 0:
            raise ValueError("BatchStream needs at least one example; the dataset is empty")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens = max_tokens
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._plan: tuple[np.ndarray, np.ndarray] | None = None

    def _epoch_plan(self) -> tuple[np.ndarray, np.ndarray]:
        if self._plan is None:
            self._plan = plan_batches(self.lengths, self.max_tokens, self.seed, self.epoch)
        return self._plan

    def batches_in_epoch(self) -> int:
        """The number of batches of the current epoch."""
        return len(self._epoch_plan()[1])

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        order, bounds = self._epoch_plan()
        if self.index >= len(bounds):
            self.epoch += 1
            self.index = 0
            self._plan = None
            order, bounds = self._epoch_plan()
        start, end = bounds[self.index]
        self.index += 1
        return order[start:end].tolist()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
        self._plan = None
