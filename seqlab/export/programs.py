"""The inference subgraphs of TransformerMT as standalone modules with tensor-only I/O.

Like Lingvo's inference graphs, decoding is split into two programs that ``torch.export`` and
ONNX can trace: the encoder (run once per batch) and a single decoder step (run once per
output token). Both reuse the task's own ``encode`` / ``init_state`` / ``extend_step``, so an
exported artifact computes what seqlab computes.

The step program's state is explicit tensors in and out. Its self-attention caches grow by
one position per call (``[N, L, H, T, Dh] -> [N, L, H, T + 1, Dh]``), so the step number is a
shape (T) rather than an input value, and every dimension the runtime varies (rows N, source
length S, steps so far T) is a dynamic dim of the exported program. The cross-attention keys
and values come with one row per hypothesis (``[N, L, H, S, Dh]``): beams of one example are
rows with identical copies (the caller repeats them once when it makes the beams).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.export import Dim

from seqlab.core.nested_map import NestedMap
from seqlab.models.mt.transformer_model import TransformerMT

ENCODER_INPUTS = ("src_ids", "src_paddings")
ENCODER_OUTPUTS = ("cross_key", "cross_value")
STEP_INPUTS = ("ids", "self_key", "self_value", "cross_key", "cross_value", "encoder_paddings")
STEP_OUTPUTS = ("log_probs", "new_self_key", "new_self_value")

# Upper bound of the dynamic row dim (examples times beams) the programs accept.
MAX_ROWS = 8192
# Source and target length bound of models without absolute positions (no table to bound them).
UNBOUNDED_MAX_POSITIONS = 1024


@dataclass(frozen=True)
class ProgramShapes:
    """The fixed dimensions of a TransformerMT's programs (everything but N, S, T)."""

    num_layers: int
    num_heads: int
    head_dim: int
    model_dim: int
    vocab_size: int
    max_positions: int  # longest source, and target steps + 1

    @classmethod
    def of(cls, task: TransformerMT) -> ProgramShapes:
        positions = task.config.positions
        attention = task.decoder.layers[0].self_attention
        return cls(
            num_layers=len(task.decoder.layers),
            num_heads=attention.num_heads,
            head_dim=attention.head_dim,
            model_dim=task.config.embedding.model_dim,
            vocab_size=task.config.embedding.vocab_size,
            max_positions=(UNBOUNDED_MAX_POSITIONS if positions is None else positions.max_length),
        )

    def cache_shape(self, rows: int, steps: int) -> tuple[int, int, int, int, int]:
        """Shape ``[N, L, H, T, Dh]`` of a self-attention cache after ``steps`` steps."""
        return (rows, self.num_layers, self.num_heads, steps, self.head_dim)


class EncoderProgram(nn.Module):
    """Source ids -> per-layer cross-attention keys and values."""

    def __init__(self, task: TransformerMT) -> None:
        super().__init__()
        self.task = task

    def forward(
        self, src_ids: torch.Tensor, src_paddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodes a padded batch.

        Args:
          src_ids: [B, S] long, ending in EOS, padded with PAD.
          src_paddings: [B, S] float, 1.0 = pad.

        Returns:
          (cross_key, cross_value), each [B, L, H, S, Dh].
        """
        encoded = self.task.encode(src_ids, src_paddings)
        state = self.task.decoder.init_state(encoded, src_paddings, max_length=0)
        return state.cross_key, state.cross_value


class DecoderStepProgram(nn.Module):
    """One decoder step: last ids and the state in, next-token log-probs and new caches out."""

    def __init__(self, task: TransformerMT) -> None:
        super().__init__()
        self.task = task

    def forward(
        self,
        ids: torch.Tensor,
        self_key: torch.Tensor,
        self_value: torch.Tensor,
        cross_key: torch.Tensor,
        cross_value: torch.Tensor,
        encoder_paddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decodes position T = ``self_key.shape[3]`` of N rows.

        Args:
          ids: [N] long, the token at position T (BOS when T = 0).
          self_key: [N, L, H, T, Dh] self-attention keys of positions 0 .. T - 1.
          self_value: [N, L, H, T, Dh] self-attention values.
          cross_key: [N, L, H, S, Dh] from the encoder program (one copy per row).
          cross_value: [N, L, H, S, Dh].
          encoder_paddings: [N, S] float, 1.0 = pad.

        Returns:
          (log_probs [N, V] of the token at T + 1, self_key and self_value [N, L, H, T + 1, Dh]).
        """
        step = self_key.shape[3]
        # A cache one position longer, which the task's extend_step fills at position T.
        empty = self_key.new_zeros(self_key.shape[:3] + (1,) + self_key.shape[4:])
        state = NestedMap(
            step=step,
            beam_size=1,
            encoder_paddings=encoder_paddings,
            self_key=torch.cat([self_key, empty], dim=3),
            self_value=torch.cat([self_value, empty], dim=3),
            cross_key=cross_key,
            cross_value=cross_value,
        )
        log_probs, state, _ = self.task.extend_step(state, ids, return_attention=False)
        return log_probs, state.self_key, state.self_value


def encoder_example(shapes: ProgramShapes) -> tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]:
    """Example inputs and dynamic shapes (B, S) for exporting the encoder program."""
    batch, source = 3, 7
    src_ids = torch.randint(4, shapes.vocab_size, (batch, source))
    src_paddings = torch.zeros(batch, source)
    src_paddings[1, 5:] = 1.0
    rows = Dim("rows", min=1, max=MAX_ROWS)
    source_length = Dim("source_length", min=1, max=shapes.max_positions)
    return (src_ids, src_paddings), ({0: rows, 1: source_length}, {0: rows, 1: source_length})


def step_example(shapes: ProgramShapes) -> tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]:
    """Example inputs and dynamic shapes (N, T, S) for exporting the decoder step program.

    T may be 0 (the first step); the largest T is the last position of the position table.
    """
    rows, steps, source = 3, 4, 7
    cache = torch.zeros(shapes.cache_shape(rows, steps))
    cross = torch.randn(shapes.cache_shape(rows, source))
    paddings = torch.zeros(rows, source)
    paddings[1, 5:] = 1.0
    ids = torch.randint(4, shapes.vocab_size, (rows,))
    n = Dim("rows", min=1, max=MAX_ROWS)
    t = Dim("steps", min=0, max=shapes.max_positions - 1)
    s = Dim("source_length", min=1, max=shapes.max_positions)
    dynamic = ({0: n}, {0: n, 3: t}, {0: n, 3: t}, {0: n, 3: s}, {0: n, 3: s}, {0: n, 1: s})
    return (ids, cache, cache.clone(), cross, cross.clone(), paddings), dynamic
