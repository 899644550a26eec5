"""Inverted dropout whose mask is drawn from uniform samples, the cheaper CPU random draw."""

from __future__ import annotations

import torch
from torch import nn


def dropout(inputs: torch.Tensor, prob: float, training: bool) -> torch.Tensor:
    """Zeroes each element with probability ``prob`` and scales the rest by ``1 / (1 - prob)``.

    The same distribution as ``torch.nn.functional.dropout``, with the mask drawn as
    ``uniform[0, 1) >= prob``: on CPU, PyTorch's ``bernoulli_`` draws about 1.6x slower than
    ``rand`` (12.3 ms against 7.5 ms for 2.1M elements on one AMD EPYC core), and dropout masks
    were 5% of a Transformer training step (docs/benchmarks.md). A different draw, so the
    random stream differs from ``F.dropout``'s under the same seed.

    Args:
      inputs: any shape.
      prob: the probability of zeroing, in [0, 1).
      training: False (or ``prob == 0``) returns ``inputs`` itself.

    Returns:
      Same shape and dtype as ``inputs``.
    """
    if not training or prob == 0.0:
        return inputs
    if not 0.0 <= prob < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {prob}")
    keep = torch.rand(inputs.shape, device=inputs.device) >= prob
    return inputs * keep.to(inputs.dtype).mul_(1.0 / (1.0 - prob))


class Dropout(nn.Module):
    """``nn.Dropout`` with the cheaper mask draw of ``dropout`` (same distribution)."""

    def __init__(self, prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {prob}")
        self.prob = prob

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """[...] -> [...]: ``dropout(inputs, prob, self.training)``."""
        return dropout(inputs, self.prob, self.training)

    def extra_repr(self) -> str:
        return f"prob={self.prob}"
