"""Which examples of a global batch each rank trains on.

The batch stream (seqlab.data.batching.BatchStream) is built globally and identically on
every rank, from the same seed; rank r takes positions r, r + W, r + 2W, ... of each global
batch (W = world size). So the global batch, and the data order, do not depend on the number
of processes; a checkpoint's stream position means the same at any world size; and over an
epoch the ranks' shards are disjoint and together cover every example exactly once. Batches
are sorted by length, so striding gives every rank a similar share of tokens.
"""

from __future__ import annotations

from collections.abc import Sequence


def shard_indices(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s examples of one global batch (possibly empty if the batch is small)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}")
    return list(indices[rank::world_size])
