"""The vocabulary-parallel token embedding and cross entropy of the tensor strategy
(Megatron-LM's layout).

Each rank holds a contiguous block of the embedding matrix's rows (its vocabulary slice).
A lookup embeds the ids of its slice, zeros elsewhere, and the ranks' results are summed;
the output projection gives each rank the logits of its slice only, [B, T, V / N], and the
cross entropy combines the slices with all-reduces of [B, T] numbers (max, sum of
exponentials, the label's logit, the sum of logits), so that the [B, T, V] logits exist
nowhere whole. The modules are rewritten from outside: their classes are swapped for these
subclasses, which keep their parameters and names.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Shard, distribute_tensor

from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy
from seqlab.layers.embedding import TokenEmbedding


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum over ranks of each rank's partial result. Backward: the gradient as
    it is (every rank computes the same whole gradient of the sum)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, group: object):
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        return grad, None


class _SharedInput(torch.autograd.Function):
    """Forward: the input as it is. Backward: the gradient summed over ranks (each rank's
    covers only its slice of the vocabulary)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, group: object):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class VocabParallelEmbedding(TokenEmbedding):
    """A ``TokenEmbedding`` whose weight is split by rows across a mesh (set by
    ``split_vocabulary``): ``logits`` returns this rank's slice of the vocabulary."""

    mesh: DeviceMesh

    def _vocabulary_slice(self) -> tuple[torch.Tensor, int]:
        """(this rank's rows [V / N, D], the id of its first row)."""
        rows = self.weight.to_local()
        return rows, rows.shape[0] * self.mesh.get_local_rank()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, T] ids -> [B, T, D] embeddings, whole on every rank."""
        rows, first = self._vocabulary_slice()
        outside = (ids < first) | (ids >= first + rows.shape[0])
        local = nn.functional.embedding((ids - first).masked_fill(outside, 0), rows)
        partial = local.masked_fill(outside.unsqueeze(-1), 0.0)
        return _SumOverRanks.apply(partial, self.mesh.get_group()) * self.scale

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, V / N] logits of this rank's slice of the vocabulary."""
        rows, _ = self._vocabulary_slice()
        return nn.functional.linear(_SharedInput.apply(inputs, self.mesh.get_group()), rows)


class _VocabParallelNegativeLogProbs(torch.autograd.Function):
    """``_NegativeLogProbs`` (seqlab.layers.cross_entropy) of logits split by vocabulary."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        labels: torch.Tensor,
        first: int,
        vocab_size: int,
        group: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [..., V / N] float of ids first.., labels [...] -> (nll [...], summed -log p
        [...]), both over the whole vocabulary of ``vocab_size``."""
        peak = logits.detach().amax(dim=-1)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - peak.unsqueeze(-1)
        inside = (labels >= first) & (labels < first + logits.shape[-1])
        local_labels = (labels - first).masked_fill(~inside, 0)
        at_label = shifted.gather(-1, local_labels.unsqueeze(-1)).squeeze(-1)
        probs = shifted.exp()
        sums = torch.stack([probs.sum(dim=-1), at_label.masked_fill(~inside, 0.0), shifted.sum(-1)])
        dist.all_reduce(sums, group=group)
        sum_exp, label_logit, sum_logits = sums.unbind(0)
        log_z = sum_exp.log()
        probs.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(probs, local_labels, inside)
        ctx.vocab_size = vocab_size
        # -log p_v = log Z - x_v, with x shifted by the peak.
        return log_z - label_logit, vocab_size * log_z - sum_logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_nll: torch.Tensor, grad_sum: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        probs, local_labels, inside = ctx.saved_tensors
        grad = probs  # in place, as _NegativeLogProbs does
        grad.mul_((grad_nll + ctx.vocab_size * grad_sum).unsqueeze(-1))
        grad.sub_(grad_sum.unsqueeze(-1))
        at_label = -(grad_nll * inside).unsqueeze(-1)
        grad.scatter_add_(-1, local_labels.unsqueeze(-1), at_label)
        return grad, None, None, None, None


class VocabParallelCrossEntropy(LabelSmoothedCrossEntropy):
    """A ``LabelSmoothedCrossEntropy`` of logits split by vocabulary as a
    ``VocabParallelEmbedding``'s ``logits`` returns them (set by ``split_vocabulary``)."""

    vocab_size: int  # of the whole vocabulary
    first_id: int  # of this rank's slice
    group: object  # the ranks that hold the other slices

    def negative_log_probs(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        nll, smooth = _VocabParallelNegativeLogProbs.apply(
            logits, labels, self.first_id, self.vocab_size, self.group
        )
        return nll, smooth, self.vocab_size


def split_vocabulary(
    embedding: TokenEmbedding, loss: LabelSmoothedCrossEntropy, mesh: DeviceMesh
) -> None:
    """Splits ``embedding`` (whose ``logits`` are the only input of ``loss``) by vocabulary
    over ``mesh``, and makes ``loss`` take the split logits; in place."""
    embedding.weight = nn.Parameter(distribute_tensor(embedding.weight.data, mesh, [Shard(0)]))
    embedding.__class__ = VocabParallelEmbedding
    embedding.mesh = mesh
    loss.__class__ = VocabParallelCrossEntropy
    loss.vocab_size = embedding.config.vocab_size
    loss.first_id = embedding._vocabulary_slice()[1]
    loss.group = mesh.get_group()
