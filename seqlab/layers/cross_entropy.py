"""Label-smoothed cross entropy over padded token sequences."""

from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer
from seqlab.core.nested_map import NestedMap


class LabelSmoothedCrossEntropy(Layer):
    """Cross entropy against a smoothed target distribution, averaged over real tokens.

    Uses fairseq's formula: the label gets ``1 - epsilon`` and every other class
    ``epsilon / (V - 1)``, so the per-token loss is
    ``(1 - epsilon - eps_i) * nll + eps_i * sum_v(-log p_v)`` with ``eps_i = epsilon / (V - 1)``.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        label_smoothing: float = param(
            0.1, doc="Probability mass epsilon moved off the label.", at_least=0, below=1
        )

    config: Config

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, paddings: torch.Tensor
    ) -> NestedMap:
        """Computes the loss.

        Args:
          logits: [B, T, V] unnormalized scores (computed in float32).
          labels: [B, T] integer labels; values at padded positions are ignored.
          paddings: [B, T], 1.0 = pad; padded positions contribute nothing.

        Returns:
          NestedMap with
            loss: scalar, smoothed loss summed over real tokens / number of real tokens
              (0 when there are none).
            nll_sum: scalar, unsmoothed negative log-likelihood summed over real tokens.
            num_tokens: scalar float, number of real tokens.
        """
        epsilon = self.config.label_smoothing
        padded = paddings > 0.5
        safe_labels = labels.masked_fill(padded, 0)
        nll, smooth, vocab_size = self.negative_log_probs(logits.float(), safe_labels)
        if epsilon > 0.0:
            if vocab_size < 2:
                raise ConfigError(
                    f"label_smoothing={epsilon} needs a vocabulary of at least 2, got {vocab_size}"
                )
            eps_i = epsilon / (vocab_size - 1)
            per_token = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
        else:
            per_token = nll
        num_tokens = (~padded).sum().to(per_token.dtype)
        return NestedMap(
            loss=per_token.masked_fill(padded, 0.0).sum() / num_tokens.clamp(min=1.0),
            nll_sum=nll.masked_fill(padded, 0.0).sum(),
            num_tokens=num_tokens,
        )

    def negative_log_probs(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """logits [..., V] float, labels [...] -> (-log p at the labels [...], -log p summed
        over the vocabulary [...], V)."""
        nll, smooth = _NegativeLogProbs.apply(logits, labels)
        return nll, smooth, logits.shape[-1]


class _NegativeLogProbs(torch.autograd.Function):
    """``-log_softmax(logits)`` at the labels and summed over the vocabulary, with one
    fused backward pass.

    Autograd through ``log_softmax``, ``gather`` and ``sum`` makes three [..., V] gradients
    (a zero-filled scatter, a broadcast, their sum) before the softmax backward; here the
    gradient is computed in place of the saved log-probabilities:
    ``d/dx_v = (g_nll + V * g_sum) * p_v - g_sum - g_nll * [v = label]``.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [..., V] float, labels [...] -> (nll [...], summed -log p [...])."""
        log_probs = F.log_softmax(logits, dim=-1)
        nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(log_probs, labels)
        return nll, -log_probs.sum(dim=-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_nll: torch.Tensor, grad_sum: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        log_probs, labels = ctx.saved_tensors
        vocab_size = log_probs.shape[-1]
        # In place: the log-probabilities are needed by no one else, and a second [..., V]
        # tensor would cost its allocation (and page faults) every step. A second backward
        # through the same graph fails autograd's check of the saved tensor's version.
        grad = log_probs.exp_()
        grad.mul_((grad_nll + vocab_size * grad_sum).unsqueeze(-1)).sub_(grad_sum.unsqueeze(-1))
        grad.scatter_add_(-1, labels.unsqueeze(-1), -grad_nll.unsqueeze(-1))
        return grad, None
