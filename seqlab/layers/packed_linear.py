"""Linear layers whose weights are prepacked for oneDNN, for CPU inference.

A decoder step multiplies a few rows (the hypotheses) by every weight matrix. At those shapes
oneDNN's GEMM on a prepacked weight is 1.2-2x faster than the MKL GEMM that ``nn.Linear``
calls on x86 CPUs (measured on an AMD EPYC, one thread: 16 x 512 by 512 x 2048 took 0.33 ms
instead of 0.47 ms; docs/benchmarks.md). It is the kernel ``torch.compile`` uses for frozen
CPU Linear layers, called here without compiling. The arithmetic is the same float32
multiply-add; only the summation order differs, so outputs agree to float32 rounding.

``pack_linear_layers`` is an inference-time model converter, like ``quantize_int8``: it returns
a copy whose ``nn.Linear`` children are ``PackedLinear``; the model's own code is unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from seqlab.layers.embedding import TokenEmbedding


def packing_available() -> bool:
    """Whether this PyTorch build has oneDNN and its prepacked Linear ops."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight  # noqa: B018 - resolves the op or raises
        torch.ops.mkldnn._linear_pointwise  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is kept prepacked for oneDNN.

    ``weight`` and ``bias`` stay the original parameters (shared, not copied), so code that
    reads them still works; the forward pass uses the packed copy, which does not follow
    later changes of ``weight``. No gradients flow through it.
    """

    def __init__(self, linear: nn.Linear, expected_rows: int = 64) -> None:
        """Packs ``linear``'s current weight.

        Args:
          linear: a float32 ``nn.Linear``.
          expected_rows: the typical number of rows per call, a hint for the packed layout
            (any number of rows works).
        """
        super().__init__()
        if linear.weight.dtype != torch.float32:
            raise ValueError(f"PackedLinear packs float32 weights, got {linear.weight.dtype}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.expected_rows = expected_rows
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer(
            "packed_weight",
            torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), expected_rows),
            persistent=False,
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """[..., in_features] -> [..., out_features], as ``nn.Linear``."""
        bias = None if self.bias is None else self.bias.detach()
        return torch.ops.mkldnn._linear_pointwise(
            inputs.contiguous(), self.packed_weight, bias, "none", [], ""
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedLinear:
        """A copy packed anew: oneDNN's packed tensors cannot be copied (no storage)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight = copy.deepcopy(self.weight, memo)
        linear.bias = copy.deepcopy(self.bias, memo)
        return PackedLinear(linear, self.expected_rows).train(self.training)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class PackedLogitsTokenEmbedding(TokenEmbedding):
    """``TokenEmbedding`` whose ``logits`` (the output projection, V x D against a few rows
    per decoder step) multiply by a oneDNN-packed copy of the matrix; lookups read the float
    matrix, which it shares with the embedding it was made from."""

    def __init__(self, embedding: TokenEmbedding, expected_rows: int) -> None:
        super().__init__(embedding.config)
        self.weight = embedding.weight
        projection = nn.Linear(*reversed(embedding.weight.shape), bias=False)
        projection.weight = embedding.weight
        self.packed_projection = PackedLinear(projection, expected_rows)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, V] logits, from the packed copy of the embedding matrix."""
        return self.packed_projection(inputs)


def _packable(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and weight.dtype == torch.float32


def pack_linear_layers(model: nn.Module, expected_rows: int = 64) -> nn.Module:
    """A copy of ``model`` in eval mode whose ``nn.Linear`` layers are ``PackedLinear``.

    Token embeddings (exactly ``TokenEmbedding``) become ``PackedLogitsTokenEmbedding``, so
    the output projection is packed too. Only layers of exactly the type ``nn.Linear`` on CPU
    in float32 are packed (subclasses,
    such as quantized or fake-quantized layers, keep their own forward). Without oneDNN the
    copy is returned unpacked.

    Args:
      model: a float model; not modified.
      expected_rows: rows per call to pack for (e.g. sentences x beam size).
    """
    # Building the replacement modules initializes throwaway weights: the caller's random
    # stream (a training run that decodes between steps) must not see it.
    with torch.random.fork_rng(devices=[]):
        return _packed_copy(model, expected_rows)


def _packed_copy(model: nn.Module, expected_rows: int) -> nn.Module:
    # The bound data pipeline (tokenizer, examples) is shared with the copy, not copied.
    data = getattr(model, "data", None)
    memo = {} if data is None else {id(data): data}
    packed = copy.deepcopy(model, memo).eval()
    if not packing_available():
        return packed
    embeddings: dict[int, PackedLogitsTokenEmbedding] = {}  # a shared embedding stays shared
    for module in list(packed.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and _packable(child.weight):
                setattr(module, name, PackedLinear(child, expected_rows))
            elif type(child) is TokenEmbedding and _packable(child.weight):
                if id(child) not in embeddings:
                    embeddings[id(child)] = PackedLogitsTokenEmbedding(child, expected_rows)
                setattr(module, name, embeddings[id(child)])
    return packed
