"""The CTC loss of per-frame logits against transcript labels, shared by the Conformer-CTC and
by LAS's auxiliary CTC head (joint CTC-attention training)."""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from seqlab.data.sentencepiece_tokenizer import PAD_ID

BLANK_ID = PAD_ID
"""The CTC blank: the tokenizer's padding id, which never occurs in a transcript."""


@dataclasses.dataclass(frozen=True)
class CtcLoss:
    """``total``: the summed negative log-likelihood (a scalar; utterances too short for their
    labels count zero); ``input_lengths`` [B] frames and ``target_lengths`` [B] labels."""

    total: torch.Tensor
    input_lengths: torch.Tensor
    target_lengths: torch.Tensor

    @property
    def per_token(self) -> torch.Tensor:
        """The total over the batch's labels (a scalar)."""
        return self.total / max(float(self.target_lengths.sum()), 1.0)


def ctc_loss(
    logits: torch.Tensor,
    paddings: torch.Tensor,
    tgt_ids: torch.Tensor,
    tgt_paddings: torch.Tensor,
) -> CtcLoss:
    """CTC of [B, T, V] frame logits with [B, T] paddings against [B, L] labels with [B, L]
    paddings (1.0 = pad), blank = :data:`BLANK_ID`, computed in float32."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    input_lengths = (1.0 - paddings).sum(dim=1).round().long()
    target_lengths = (1.0 - tgt_paddings).sum(dim=1).round().long()
    total = F.ctc_loss(
        log_probs.transpose(0, 1),
        tgt_ids,
        input_lengths,
        target_lengths,
        blank=BLANK_ID,
        reduction="sum",
        zero_infinity=True,
    )
    return CtcLoss(total, input_lengths, target_lengths)
