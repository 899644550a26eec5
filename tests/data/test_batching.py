"""Tests for seqlab.data.batching."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.batching import BatchStream, make_batches

lengths_strategy = st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=80)


def _lengths(count: int = 200, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 40) for _ in range(count)]


def _take(stream: BatchStream, count: int) -> list[list[int]]:
    return list(itertools.islice(stream, count))


def _assert_budget(batches: list[list[int]], lengths: list[int], max_tokens: int) -> None:
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= max_tokens or len(batch) == 1, (batch, padded)


def _assert_partition(batches: list[list[int]], count: int) -> None:
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(count))
    assert all(batches)


@settings(max_examples=60, deadline=None)
@given(
    lengths=lengths_strategy,
    max_tokens=st.integers(min_value=1, max_value=300),
    seed=st.integers(min_value=0, max_value=2**31),
    epoch=st.integers(min_value=0, max_value=50),
    shuffle=st.booleans(),
)
def test_batches_partition_the_examples_within_the_budget(
    lengths: list[int], max_tokens: int, seed: int, epoch: int, shuffle: bool
) -> None:
    batches = make_batches(lengths, max_tokens, seed=seed, epoch=epoch, shuffle=shuffle)
    _assert_partition(batches, len(lengths))
    _assert_budget(batches, lengths, max_tokens)
    assert batches == make_batches(lengths, max_tokens, seed=seed, epoch=epoch, shuffle=shuffle)


def test_long_examples_get_a_batch_of_their_own() -> None:
    lengths = [5, 50, 5, 70, 5]
    batches = make_batches(lengths, max_tokens=20, seed=0, epoch=0)
    _assert_partition(batches, 5)
    assert [1] in batches and [3] in batches
    assert sorted(len(b) for b in batches) == [1, 1, 3]


def test_batches_are_filled_greedily_in_length_order() -> None:
    lengths = [4, 1, 3, 2, 8, 8]
    batches = make_batches(lengths, max_tokens=8, seed=0, epoch=0, shuffle=False)
    assert batches == [[1, 3], [2, 0], [4], [5]]


def test_eval_batches_follow_sorted_order() -> None:
    lengths = _lengths()
    batches = make_batches(lengths, max_tokens=100, seed=5, epoch=3, shuffle=False)
    order = [i for batch in batches for i in batch]
    assert [lengths[i] for i in order] == sorted(lengths)
    assert batches == make_batches(lengths, max_tokens=100, seed=0, epoch=0, shuffle=False)


def test_epochs_and_seeds_give_different_orders() -> None:
    lengths = _lengths()
    base = make_batches(lengths, max_tokens=100, seed=1, epoch=0)
    assert base == make_batches(lengths, max_tokens=100, seed=1, epoch=0)
    assert base != make_batches(lengths, max_tokens=100, seed=1, epoch=1)
    assert base != make_batches(lengths, max_tokens=100, seed=2, epoch=0)


def test_equal_lengths_are_mixed_across_epochs() -> None:
    # With all lengths equal, only the seeded tie-break decides which examples share a batch.
    lengths = [10] * 40
    first = {tuple(sorted(b)) for b in make_batches(lengths, 50, seed=0, epoch=0)}
    second = {tuple(sorted(b)) for b in make_batches(lengths, 50, seed=0, epoch=1)}
    assert first != second


def test_stream_covers_every_example_once_per_epoch() -> None:
    lengths = _lengths(100)
    stream = BatchStream(lengths, max_tokens=120, seed=3)
    epochs = [make_batches(lengths, 120, seed=3, epoch=e) for e in range(3)]
    total = sum(len(e) for e in epochs)
    assert _take(stream, total) == [b for e in epochs for b in e]
    assert stream.state_dict() == {"epoch": 2, "index": len(epochs[2])}
    for batches in epochs:
        _assert_partition(batches, 100)
    assert epochs[0] != epochs[1]


def _assert_resume_matches(lengths: list[int], max_tokens: int, seed: int, stop: int) -> None:
    total = stop + 25
    uninterrupted = _take(BatchStream(lengths, max_tokens, seed), total)
    first = BatchStream(lengths, max_tokens, seed)
    head = _take(first, stop)
    state = json.loads(json.dumps(first.state_dict()))  # as stored in a checkpoint
    resumed = BatchStream(lengths, max_tokens, seed)
    resumed.load_state_dict(state)
    assert head + _take(resumed, total - stop) == uninterrupted


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_resume_across_an_epoch_boundary(offset: int) -> None:
    lengths = _lengths(60)
    per_epoch = len(make_batches(lengths, 90, seed=11, epoch=0))
    _assert_resume_matches(lengths, 90, seed=11, stop=per_epoch + offset)
    _assert_resume_matches(lengths, 90, seed=11, stop=2 * per_epoch + offset)


@settings(max_examples=30, deadline=None)
@given(
    lengths=lengths_strategy,
    max_tokens=st.integers(min_value=1, max_value=200),
    seed=st.integers(min_value=0, max_value=1000),
    stop=st.integers(min_value=0, max_value=120),
)
def test_resume_continues_the_same_stream(
    lengths: list[int], max_tokens: int, seed: int, stop: int
) -> None:
    _assert_resume_matches(lengths, max_tokens, seed, stop)


def test_resume_into_a_used_stream_resets_it() -> None:
    lengths = _lengths(50)
    reference = BatchStream(lengths, 80, seed=0)
    _take(reference, 7)
    state = reference.state_dict()
    expected = _take(reference, 10)
    other = BatchStream(lengths, 80, seed=0)
    _take(other, 30)  # somewhere else, possibly another epoch
    other.load_state_dict(state)
    assert _take(other, 10) == expected


def test_empty_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one example"):
        BatchStream([], max_tokens=10, seed=0)
    assert make_batches([], max_tokens=10, seed=0, epoch=0) == []
