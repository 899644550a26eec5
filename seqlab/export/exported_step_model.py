"""An artifact's encoder and decoder-step programs as the beam search's IncrementalModel (and
the sampler's step model)."""

from __future__ import annotations

import torch

from seqlab.core.nested_map import NestedMap
from seqlab.decoding.step_model import example_rows
from seqlab.export.program_runners import Program


class ExportedStepModel:
    """Runs the programs of ``seqlab.export.programs`` (torch.export or ONNX) step by step.

    The state holds the programs' tensors by their manifest names: ``carried`` (returned anew
    by every step) and ``constants`` (from the encoder program, one row per hypothesis), and
    ``beam_size`` K. ``expand_state`` repeats every row K times (so each beam has its copy of
    the constants, as the step program takes them); afterwards ``reorder_state`` moves only
    the carried tensors, because beams stay within their example, whose rows are identical
    elsewhere.
    """

    def __init__(
        self,
        decoder_step: Program,
        carried: list[str],
        constants: list[str],
        encoder: Program | None = None,
        initial_shapes: dict[str, list[int]] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        """``encoder`` makes the initial state of a translation model; a language model (no
        encoder) starts from zeros of ``initial_shapes`` (per row) on ``device``."""
        self.encoder = encoder
        self.decoder_step = decoder_step
        self.carried = list(carried)
        self.constants = list(constants)
        self.initial_shapes = initial_shapes or {}
        self.device = torch.device(device)

    def init_state(self, src_ids: torch.Tensor, src_paddings: torch.Tensor) -> NestedMap:
        """Runs the encoder program on [B, S] ids and paddings (1.0 = pad): the state of B rows."""
        assert self.encoder is not None, "a language model starts from zero_state"
        outputs = self.encoder(src_ids.to(self.device), src_paddings.to(self.device))
        return self._state(outputs[: len(self.carried)], outputs[len(self.carried) :])

    def zero_state(self, rows: int) -> NestedMap:
        """A language model's state before BOS, for ``rows`` rows."""
        carried = [
            torch.zeros([rows, *self.initial_shapes[name]], device=self.device)
            for name in self.carried
        ]
        return self._state(carried, [])

    def _state(self, carried: list | tuple, constants: list | tuple) -> NestedMap:
        return NestedMap(
            beam_size=1,
            carried=NestedMap(zip(self.carried, carried, strict=True)),
            constants=NestedMap(zip(self.constants, constants, strict=True)),
        )

    def extend_step(
        self, state: NestedMap, ids: torch.Tensor
    ) -> tuple[torch.Tensor, NestedMap, None]:
        """[N] last ids -> ([N, V] next-token log-probs, state, None)."""
        log_probs, *carried = self.decoder_step(
            ids.to(self.device), *state.carried.values(), *state.constants.values()
        )
        new_carried = NestedMap(zip(self.carried, carried, strict=True))
        return log_probs, NestedMap(state, carried=new_carried), None

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        return NestedMap(
            state.transform(
                lambda v: (
                    v.repeat_interleave(beam_size, dim=0) if isinstance(v, torch.Tensor) else v
                )
            ),
            beam_size=state.beam_size * beam_size,
        )

    def select_examples(self, state: NestedMap, examples: torch.Tensor) -> NestedMap:
        """Keeps the examples ``examples`` ([B'] long, increasing) with all their K beams."""
        rows = example_rows(examples, state.beam_size)
        return NestedMap(
            state,
            carried=state.carried.transform(lambda v: v.index_select(0, rows.to(v.device))),
            constants=state.constants.transform(lambda v: v.index_select(0, rows.to(v.device))),
        )

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        def select(part: NestedMap) -> NestedMap:
            return part.transform(lambda v: v.index_select(0, indices.to(v.device)))

        if state.beam_size == 1:
            return NestedMap(
                state, carried=select(state.carried), constants=select(state.constants)
            )
        return NestedMap(state, carried=select(state.carried))
