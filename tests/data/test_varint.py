"""LEB128 token ids: round trips at every byte length, sizes, and the one-byte fast path."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from seqlab.data.varint import decode_varints, encode_varints, varint_sizes


@given(st.lists(st.integers(min_value=0, max_value=2**35 - 1), max_size=200))
def test_round_trip(ids: list[int]) -> None:
    encoded = encode_varints(np.array(ids, dtype=np.int64))
    assert encoded.dtype == np.uint8
    assert len(encoded) == int(varint_sizes(np.array(ids, dtype=np.int64)).sum())
    assert decode_varints(encoded).tolist() == ids


def test_sizes_and_bytes_at_the_boundaries() -> None:
    ids = np.array([0, 127, 128, 16383, 16384, 2**21 - 1, 2**21])
    assert varint_sizes(ids).tolist() == [1, 1, 2, 2, 3, 3, 4]
    assert encode_varints(np.array([1, 300])).tolist() == [0x01, 0xAC, 0x02]
    assert decode_varints(np.array([5, 9, 127], dtype=np.uint8)).tolist() == [5, 9, 127]
    assert decode_varints(np.zeros(0, dtype=np.uint8)).tolist() == []
