"""Symmetric fake quantization with a straight-through gradient."""

from __future__ import annotations

import torch


def fake_quantize_symmetric(
    inputs: torch.Tensor, max_abs: torch.Tensor, max_int: int
) -> torch.Tensor:
    """Rounds ``inputs`` to the nearest of ``max_abs / max_int * {-max_int, ..., max_int}``.

    The forward pass sees the rounded (and saturated) values; the backward pass treats the
    rounding as the identity (straight-through estimator), as TF's fake_quant ops do.

    Args:
      inputs: [...] float.
      max_abs: tensor broadcastable to ``inputs`` (a scalar, or e.g. [Dout, 1] per row):
        the value that maps to ``max_int``.
      max_int: 127 for 8 bits.

    Returns:
      [...] fake-quantized ``inputs``.
    """
    scale = (max_abs / max_int).clamp(min=torch.finfo(torch.float32).tiny)
    rounded = (inputs / scale).round().clamp(-max_int, max_int) * scale
    return inputs + (rounded - inputs).detach()
