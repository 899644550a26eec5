"""A token embedding whose output projection (the tied softmax weights) runs in int8."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from seqlab.layers.embedding import TokenEmbedding


class Int8LogitsTokenEmbedding(TokenEmbedding):
    """``TokenEmbedding`` for int8 inference: lookups read the float matrix, ``logits``
    multiplies by a dynamic int8 copy of it (one scale per vocabulary row, inputs quantized
    per call), as CTranslate2's int8 mode does.

    The output projection is a large part of a decoder step (V x D against a few rows): in
    float32 it was 19% of an int8 beam-4 step of the base Transformer (docs/benchmarks.md).
    Built by ``seqlab.quant.ptq.quantize_int8`` from a float embedding, whose parameter it
    shares; the int8 copy does not follow later changes of ``weight``.
    """

    def __init__(self, embedding: TokenEmbedding) -> None:
        super().__init__(embedding.config)
        self.weight = embedding.weight
        float_projection = nn.Linear(*reversed(embedding.weight.shape), bias=False)
        float_projection.weight = embedding.weight
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
            from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
            from torch.ao.quantization import default_dynamic_qconfig

            float_projection.qconfig = default_dynamic_qconfig
            self.int8_projection = DynamicInt8Linear.from_float(float_projection)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, T, V] logits, from the int8 copy of the embedding matrix."""
        return self.int8_projection(inputs)
