"""Sequence packing: several short sequences share one fixed-length row.

A packed row holds segments ``1, 2, ...`` one after another, then padding. Two tensors
describe the layout:

- ``segment_ids`` [B, T]: the segment (1, 2, ...) of every position; 0 = padding.
- ``segment_positions`` [B, T]: the position of every token inside its own segment (0, 1,
  ...; 0 at padding), so that positions restart at every segment start.

Models must never let information cross a segment boundary: self-attention takes the
``segment_ids`` and masks keys of other segments (``MultiHeadAttention``), recurrent models
run every segment as a row of its own (:func:`segments_to_rows` / :func:`rows_to_segments`).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence

import torch


def pack_sequences(lengths: Sequence[int], row_length: int) -> list[list[int]]:
    """Groups sequences into rows of at most ``row_length`` tokens (best-fit decreasing).

    Longest first, each sequence goes into the open row with the least room that still fits
    it, else into a new row. The result depends only on ``lengths`` and ``row_length``.

    Args:
      lengths: tokens per sequence, each in ``[1, row_length]``.
      row_length: tokens per row.

    Returns:
      Rows, each a list of sequence indices in the order they are laid out; every index
      appears exactly once.

    Raises:
      ValueError: for a sequence longer than ``row_length`` or empty.
    """
    for index, length in enumerate(lengths):
        if not 1 <= length <= row_length:
            raise ValueError(
                f"sequence {index} has {length} tokens; packing needs 1 to row_length "
                f"({row_length}) tokens per sequence (split longer ones first)"
            )
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    # Open rows by the room they have left: a min-heap of row indices per room, and the
    # sorted rooms that have any. Best fit takes the smallest room that fits, and there the
    # lowest row; the cost per sequence depends on row_length, not on the number of rows.
    by_room: dict[int, list[int]] = {}
    rooms: list[int] = []
    for index in order:
        length = lengths[index]
        slot = bisect.bisect_left(rooms, length)
        if slot < len(rooms):
            room = rooms[slot]
            row = heapq.heappop(by_room[room])
            if not by_room[room]:
                rooms.pop(slot)
        else:
            room, row = row_length, len(rows)
            rows.append([])
        rows[row].append(index)
        left = room - length
        if left > 0:
            if not by_room.get(left):
                by_room[left] = []
                bisect.insort(rooms, left)
            heapq.heappush(by_room[left], row)
    return rows


def segment_layout(
    segment_lengths: Sequence[Sequence[int]], row_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layout tensors of rows holding segments of the given lengths.

    Args:
      segment_lengths: per row, the lengths of its segments in order.
      row_length: T.

    Returns:
      (segment_ids [B, T] long, 0 = pad; segment_positions [B, T] long).
    """
    segment_ids = torch.zeros(len(segment_lengths), row_length, dtype=torch.long)
    positions = torch.zeros(len(segment_lengths), row_length, dtype=torch.long)
    for row, lengths in enumerate(segment_lengths):
        start = 0
        for segment, length in enumerate(lengths, start=1):
            segment_ids[row, start : start + length] = segment
            positions[row, start : start + length] = torch.arange(length)
            start += length
    return segment_ids, positions


def _segment_numbers(
    segment_ids: torch.Tensor, segment_positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(real positions [B, T] bool, segment number of every position counted over the whole
    batch from 0 in row-major order [B, T], number of segments)."""
    real = segment_ids > 0
    starts = real & (segment_positions == 0)
    number = torch.cumsum(starts.flatten(), 0).view_as(segment_ids) - 1
    return real, number, int(starts.sum())


def segments_to_rows(
    values: torch.Tensor, segment_ids: torch.Tensor, segment_positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves every segment of a packed batch into a row of its own.

    Args:
      values: [B, T, ...] packed values.
      segment_ids: [B, T], 0 = pad.
      segment_positions: [B, T].

    Returns:
      (rows [N, L, ...] with N the number of segments and L the longest, zero-padded;
      paddings [N, L], 1.0 = pad). Segments come in row-major order of the packed batch.
    """
    real, number, num_segments = _segment_numbers(segment_ids, segment_positions)
    max_length = int(segment_positions[real].max()) + 1 if num_segments else 0
    rows = values.new_zeros((num_segments, max_length) + values.shape[2:])
    rows[number[real], segment_positions[real]] = values[real]
    paddings = torch.ones(num_segments, max_length, device=values.device)
    paddings[number[real], segment_positions[real]] = 0.0
    return rows, paddings


def rows_to_segments(
    rows: torch.Tensor, segment_ids: torch.Tensor, segment_positions: torch.Tensor
) -> torch.Tensor:
    """Inverse of :func:`segments_to_rows`: [N, L, ...] rows -> [B, T, ...], zero at padding."""
    real, number, _ = _segment_numbers(segment_ids, segment_positions)
    out = rows.new_zeros(segment_ids.shape + rows.shape[2:])
    out[real] = rows[number[real], segment_positions[real]]
    return out
