"""Per-rank shards of the global batch stream: disjoint, complete, and independent of the
number of processes."""

from __future__ import annotations

import numpy as np
import pytest

from seqlab.data.batching import BatchStream
from seqlab.data.data_sharding import shard_indices


def lengths(count: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(3, 60, size=count).tolist()


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_of_all_ranks_cover_every_example_once_per_epoch(world_size: int) -> None:
    example_lengths = lengths(500)
    # Every rank builds the same global stream from the same seed.
    streams = [BatchStream(example_lengths, max_tokens=300, seed=7) for _ in range(world_size)]
    for epoch in range(2):
        batches_in_epoch = streams[0].batches_in_epoch()
        counts = np.zeros(len(example_lengths), dtype=int)
        for _ in range(batches_in_epoch):
            global_batches = [next(s) for s in streams]
            assert all(b == global_batches[0] for b in global_batches)
            shards = [shard_indices(b, r, world_size) for r, b in enumerate(global_batches)]
            for shard in shards:
                counts[shard] += 1
        assert streams[0].epoch == epoch
        assert (counts == 1).all(), f"epoch {epoch}: some example seen {counts.max()} times"
        assert batches_in_epoch > 10


def test_global_batches_do_not_depend_on_world_size_and_resume_the_same() -> None:
    example_lengths = lengths(300, seed=5)
    single = BatchStream(example_lengths, max_tokens=250, seed=2)
    expected = [next(single) for _ in range(40)]
    stream = BatchStream(example_lengths, max_tokens=250, seed=2)
    first = [next(stream) for _ in range(17)]
    resumed = BatchStream(example_lengths, max_tokens=250, seed=2)
    resumed.load_state_dict(stream.state_dict())
    rest = [next(resumed) for _ in range(23)]
    assert first + rest == expected
    for batch in expected:
        rebuilt = sorted(i for r in range(4) for i in shard_indices(batch, r, 4))
        assert rebuilt == sorted(batch)


def test_shards_are_balanced_and_small_batches_leave_ranks_empty() -> None:
    assert shard_indices([5, 6, 7, 8, 9], 0, 2) == [5, 7, 9]
    assert shard_indices([5, 6, 7, 8, 9], 1, 2) == [6, 8]
    assert shard_indices([5], 1, 2) == []
    with pytest.raises(ValueError, match="rank 2 is outside a world of size 2"):
        shard_indices([1, 2], 2, 2)
