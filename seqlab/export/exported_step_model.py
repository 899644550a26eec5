"""An exported encoder and decoder-step program pair as the beam search's IncrementalModel."""

from __future__ import annotations

import torch

from seqlab.core.nested_map import NestedMap
from seqlab.export.program_runners import Program


class ExportedStepModel:
    """Runs the programs of ``seqlab.export.programs`` (torch.export or ONNX) step by step.

    The state holds the programs' tensors: ``self_key`` / ``self_value`` [N, L, H, T, Dh]
    (grown by one position per step), ``cross_key`` / ``cross_value`` [N, L, H, S, Dh],
    ``encoder_paddings`` [N, S], and ``beam_size`` K. ``expand_state`` repeats every row K
    times (so each beam has its copy of the encoder keys/values, as the step program takes
    them); afterwards ``reorder_state`` moves only the self-attention caches, because beams
    stay within their example, whose rows are identical elsewhere.
    """

    def __init__(
        self, encoder: Program, decoder_step: Program, num_layers: int, num_heads: int,
        head_dim: int,
    ) -> None:  # fmt: skip
        self.encoder = encoder
        self.decoder_step = decoder_step
        self.cache_dims = (num_layers, num_heads, 0, head_dim)

    def init_state(self, src_ids: torch.Tensor, src_paddings: torch.Tensor) -> NestedMap:
        """Runs the encoder program.

        Args:
          src_ids: [B, S] long.
          src_paddings: [B, S] float, 1.0 = pad.

        Returns:
          The state of B rows before the first step.
        """
        cross_key, cross_value = self.encoder(src_ids, src_paddings)
        empty = cross_key.new_zeros((src_ids.shape[0], *self.cache_dims))
        return NestedMap(
            beam_size=1,
            self_key=empty,
            self_value=empty.clone(),
            cross_key=cross_key,
            cross_value=cross_value,
            encoder_paddings=src_paddings,
        )

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor
    ) -> tuple[torch.Tensor, NestedMap, None]:
        log_probs, self_key, self_value = self.decoder_step(
            ids,
            state.self_key,
            state.self_value,
            state.cross_key,
            state.cross_value,
            state.encoder_paddings,
        )
        return log_probs, NestedMap(state, self_key=self_key, self_value=self_value), None

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return NestedMap(
            state.transform(
                lambda v: (
                    v.repeat_interleave(beam_size, dim=0) if isinstance(v, torch.Tensor) else v
                )
            ),
            beam_size=state.beam_size * beam_size,
        )

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        if state.beam_size == 1:
            return state.transform(
                lambda v: v.index_select(0, indices) if isinstance(v, torch.Tensor) else v
            )
        return NestedMap(
            state,
            self_key=state.self_key.index_select(0, indices),
            self_value=state.self_value.index_select(0, indices),
        )
