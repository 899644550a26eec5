"""Packing sequences into rows, the segment layout, and unpacking segments into rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlab.data.sequence_packing import (
    pack_sequences,
    rows_to_segments,
    segment_layout,
    segments_to_rows,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 16), min_size=1, max_size=60))
def test_packing_places_every_sequence_once_within_the_row_length(lengths: list[int]) -> None:
    rows = pack_sequences(lengths, 16)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 16 for row in rows)
    # Best fit never leaves two rows that could have been one.
    totals = sorted(sum(lengths[i] for i in row) for row in rows)
    assert len(totals) < 2 or totals[0] + totals[1] > 16


def test_packing_is_deterministic_and_fills_rows() -> None:
    lengths = [10, 3, 7, 6, 2, 4, 8]
    assert pack_sequences(lengths, 10) == pack_sequences(lengths, 10)
    rows = pack_sequences(lengths, 10)
    assert len(rows) == 4  # 40 tokens in rows of 10: no waste here
    with pytest.raises(ValueError, match="sequence 0 has 11 tokens"):
        pack_sequences([11], 10)


def test_layout_restarts_positions_per_segment() -> None:
    segment_ids, positions = segment_layout([[2, 3], [4]], 6)
    assert segment_ids.tolist() == [[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 0, 0]]
    assert positions.tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 0]]


def test_segments_to_rows_and_back_round_trips() -> None:
    segment_ids, positions = segment_layout([[2, 3], [4]], 6)
    values = torch.arange(12.0).view(2, 6, 1)
    rows, paddings = segments_to_rows(values, segment_ids, positions)
    assert rows[..., 0].tolist() == [[0, 1, 0, 0], [2, 3, 4, 0], [6, 7, 8, 9]]
    assert paddings.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]
    back = rows_to_segments(rows, segment_ids, positions)
    assert torch.equal(back, values * (segment_ids > 0)[..., None])
