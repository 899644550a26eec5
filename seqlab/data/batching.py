"""Batching by a token budget with length bucketing, and a resumable seeded batch stream."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def make_batches(
    lengths: Sequence[int], max_tokens: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """Groups example indices into batches whose padded size fits ``max_tokens``.

    Examples are sorted by length (ties broken by a seeded permutation when ``shuffle``), cut
    greedily into batches with ``len(batch) * max_length_in_batch <= max_tokens``, and the
    batch order is shuffled. The result depends only on (lengths, max_tokens, seed, epoch).

    Args:
      lengths: per-example length in tokens (e.g. max of source and target length).
      max_tokens: budget of padded tokens per batch; an example longer than it gets a batch
        of its own.
      seed: base seed.
      epoch: epoch number, mixed into the seed so each epoch differs.
      shuffle: if False, batches follow the sorted order (used for eval/decode).

    Returns:
      A list of batches, each a list of example indices; every index appears exactly once.
    """
    lengths_np = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths_np)) if shuffle else np.arange(len(lengths_np))
    order = order[np.argsort(lengths_np[order], kind="stable")]
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order.tolist():
        length = int(lengths_np[index])
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    if shuffle:
        batch_order = rng.permutation(len(batches))
        batches = [batches[i] for i in batch_order]
    return batches


class BatchStream:
    """An endless, seeded stream of batches over epochs, whose position can be saved.

    The position is (epoch, index of the next batch in that epoch); restoring it continues
    the stream exactly where it stopped.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int) -> None:
        if len(lengths) == 0:
            raise ValueError("BatchStream needs at least one example; the dataset is empty")
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._batches: list[list[int]] | None = None

    def _epoch_batches(self) -> list[list[int]]:
        if self._batches is None:
            self._batches = make_batches(self.lengths, self.max_tokens, self.seed, self.epoch)
        return self._batches

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        batches = self._epoch_batches()
        if self.index >= len(batches):
            self.epoch += 1
            self.index = 0
            self._batches = None
            batches = self._epoch_batches()
        batch = batches[self.index]
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.index = int(state["index"])
        self._batches = None
