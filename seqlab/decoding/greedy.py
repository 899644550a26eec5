"""Batched greedy decoding: the most likely next token at every step."""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.core.nested_map import NestedMap
from seqlab.decoding.beam_search import COMPACT_FRACTION
from seqlab.decoding.step_model import IncrementalModel


@torch.no_grad()
def greedy_search(
    model: IncrementalModel,
    state: NestedMap,
    bos_id: int,
    eos_id: int,
    batch_size: int,
    max_lengths: Tensor,
) -> list[list[int]]:
    """Decodes B examples greedily; stops when every row has emitted EOS or hit its length.

    Args:
      model: the decoder.
      state: its state for the B examples.
      bos_id: token fed at the first step.
      eos_id: token that ends a hypothesis.
      batch_size: B.
      max_lengths: [B] long, most output tokens per example, EOS not counted.

    Returns:
      B token id lists without BOS and EOS, list b at most ``max_lengths[b]`` long.
    """
    num_steps = int(max_lengths.max())
    device = max_lengths.device
    select_examples = getattr(model, "select_examples", None)
    active = torch.arange(batch_size, device=device)  # the original row of each row decoded
    ids = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    outputs = torch.full((batch_size, num_steps), eos_id, dtype=torch.long, device=device)
    finished = max_lengths <= 0
    row_max_lengths = max_lengths
    for t in range(num_steps):
        num_finished = int(finished.sum())
        if num_finished == finished.shape[0]:
            break
        if select_examples is not None and num_finished >= finished.shape[0] * COMPACT_FRACTION:
            kept = (~finished).nonzero().squeeze(1)  # batch compaction (see beam_search)
            state = select_examples(state, kept)
            active, ids, row_max_lengths = (
                v.index_select(0, kept) for v in (active, ids, row_max_lengths)
            )
            finished = finished.index_select(0, kept)
        log_probs, state, _ = model.extend_step(state, ids)
        ids = log_probs.argmax(-1).masked_fill(finished, eos_id)
        outputs[active, t] = ids
        finished |= (ids == eos_id) | (row_max_lengths <= t + 1)

    # A hypothesis ends before its first EOS, or at its maximum length.
    before_eos = (outputs != eos_id).long().cumprod(1).sum(1)
    lengths = before_eos.minimum(max_lengths).tolist()
    return [row[:length] for row, length in zip(outputs.tolist(), lengths, strict=True)]
