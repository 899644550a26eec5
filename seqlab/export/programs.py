"""The inference subgraphs of an exported model as standalone modules with tensor-only I/O.

Like Lingvo's inference graphs, decoding is split into programs that ``torch.export`` and ONNX
can trace: the encoder (run once per batch; translation models only) and a single decoder step
(run once per output token). Both call the task's own ``encode`` / ``init_decoder_state`` /
``extend_step``, so an exported artifact computes what seqlab computes, for every family of
``seqlab.export.model_families``.

The step program's state is explicit tensors in and out: the leaves of the task's state
NestedMap, named by their dotted keys (``StateLayout``). The carried leaves come back anew from
every step; the constants (the encoder's keys and values) go in unchanged, with one row per
hypothesis (the caller repeats them once when it makes the beams). Where the carried tensors are
self-attention caches, they grow by one position per call (``[N, L, H, T, Dh] -> [N, L, H, T +
1, Dh]``), so the step number is a shape (T) rather than an input value. Every dimension the
runtime varies (rows N, source length S, steps so far T) is a dynamic dim of the programs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from seqlab.core.nested_map import NestedMap
from seqlab.export.artifact import ArtifactError
from seqlab.export.model_families import LANGUAGE_MODEL, ModelFamily
from seqlab.layers.lstm_cell import LSTMCell

ENCODER_INPUTS = ("src_ids", "src_paddings")
# Upper bound of the dynamic row dim (examples times beams) the programs accept.
MAX_ROWS = 8192
# Source and target length bound of models without absolute positions (no table to bound them).
UNBOUNDED_MAX_POSITIONS = 1024
# The dim of a growing self-attention cache [N, L, H, T, Dh] that counts the steps.
CACHE_STEP_DIM = 3


def max_positions(task: nn.Module) -> int:
    """Longest source, and target steps + 1: the task's absolute position table, if any."""
    positions = getattr(task.config, "positions", None) or getattr(
        task.config, "source_positions", None
    )
    return UNBOUNDED_MAX_POSITIONS if positions is None else positions.max_length


def check_encoder_traceable(task: nn.Module) -> None:
    """Refuses an encoder that loops over the source positions in Python (LSTM cells).

    ``torch.export`` and the ONNX exporter unroll such a loop at the example's length, so the
    program would accept that one source length only (and one program per length would take
    minutes each to trace).

    Raises:
      ArtifactError: naming the model and the encoder setting.
    """
    if any(isinstance(m, LSTMCell) for m in task.encoder.modules()):
        name = type(task).__name__
        raise ArtifactError(
            f"cannot export {name} with an LSTM encoder (task.encoder = "
            f"{type(task.encoder).__name__}): its loop over the source positions traces at one "
            "fixed length; a Transformer encoder (the hybrid) exports"
        )


def initial_state(
    task: nn.Module, family: ModelFamily, src_ids: torch.Tensor, src_paddings: torch.Tensor
) -> NestedMap:
    """The task's state before the first step, for a batch of [B, S] sources (an LM: B rows)."""
    if family.kind == LANGUAGE_MODEL:
        return task.init_state(src_ids.shape[0], 0)
    return task.init_decoder_state(task.encode(src_ids, src_paddings), src_paddings, 0)


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """The tensors of a task's state as the programs pass them, in a fixed order."""

    carried: tuple[str, ...]
    """Dotted keys of the tensors each step returns anew."""
    constants: tuple[str, ...]
    """Dotted keys of the tensors the encoder computes once."""
    template: NestedMap
    """The state's structure and its non-tensor leaves (``step``, ``beam_size``)."""
    growing_caches: bool

    @classmethod
    def of(cls, state: NestedMap, family: ModelFamily) -> StateLayout:
        """The layout of ``state`` (from ``initial_state``) for ``family``."""
        carried, constants = [], []
        for name, leaf in state.flatten():
            if isinstance(leaf, torch.Tensor):
                is_constant = name.split(".")[0] in family.constants
                (constants if is_constant else carried).append(name)
        return cls(
            tuple(carried),
            tuple(constants),
            state.transform(lambda v: None if isinstance(v, torch.Tensor) else v),
            family.growing_caches,
        )

    def tensors(self, state: NestedMap, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
        """The leaves ``names`` of ``state``, in that order."""
        leaves = dict(state.flatten())
        return tuple(leaves[name] for name in names)

    def state(
        self, carried: tuple[torch.Tensor, ...], constants: tuple[torch.Tensor, ...]
    ) -> NestedMap:
        """The task's state with these tensors (as ordered by ``carried`` and ``constants``)."""
        leaves = dict(zip(self.carried, carried, strict=True))
        leaves.update(zip(self.constants, constants, strict=True))
        return self.template.with_leaves(leaves)


class EncoderProgram(nn.Module):
    """Source ids -> the initial state: carried tensors, then constants."""

    def __init__(self, task: nn.Module, family: ModelFamily, layout: StateLayout) -> None:
        super().__init__()
        self.task = task
        self.family = family
        self.layout = layout

    def forward(
        self, src_ids: torch.Tensor, src_paddings: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Encodes a padded batch.

        Args:
          src_ids: [B, S] long, ending in EOS, padded with PAD.
          src_paddings: [B, S] float, 1.0 = pad.

        Returns:
          The state's tensors of B rows, ``layout.carried + layout.constants``.
        """
        state = initial_state(self.task, self.family, src_ids, src_paddings)
        return self.layout.tensors(state, self.layout.carried + self.layout.constants)


class DecoderStepProgram(nn.Module):
    """One step: last ids and the state in, next-token log-probs and the new carried state out."""

    def __init__(self, task: nn.Module, layout: StateLayout) -> None:
        super().__init__()
        self.task = task
        self.layout = layout

    def forward(self, ids: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Decodes one position of N rows.

        Args:
          ids: [N] long, the last token (BOS at the first step).
          *tensors: the carried tensors, then the constants (``layout``), N rows each; growing
            caches hold the T positions before this one.

        Returns:
          (log_probs [N, V] of the next token, *the new carried tensors).
        """
        layout = self.layout
        carried = tensors[: len(layout.carried)]
        constants = tensors[len(layout.carried) :]
        state = layout.state(carried, constants)
        if layout.growing_caches:
            # Caches one position longer, which the task's extend_step fills at position T.
            steps = carried[0].shape[CACHE_STEP_DIM]
            state = state.with_leaves(
                {name: _grow(cache) for name, cache in zip(layout.carried, carried, strict=True)}
            )
            state.step = steps
        log_probs, state, _ = self.task.extend_step(state, ids)
        return (log_probs, *layout.tensors(state, layout.carried))


def _grow(cache: torch.Tensor) -> torch.Tensor:
    """[N, L, H, T, Dh] -> [N, L, H, T + 1, Dh], zero at position T."""
    empty = cache.new_zeros(cache.shape[:CACHE_STEP_DIM] + (1,) + cache.shape[CACHE_STEP_DIM + 1 :])
    return torch.cat([cache, empty], dim=CACHE_STEP_DIM)


@dataclasses.dataclass
class ProgramExamples:
    """Example inputs and dynamic shapes of both programs, and the state layout."""

    layout: StateLayout
    encoder: tuple[tuple[torch.Tensor, ...], tuple[dict, ...]] | None
    step: tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]
    initial_carried: tuple[torch.Tensor, ...]
    """The carried tensors before the first step (of the example rows)."""

    @property
    def initial_shapes(self) -> dict[str, list[int]]:
        """Per-row shapes of the carried tensors before the first step (an LM's zero state)."""
        return {
            name: list(tensor.shape[1:])
            for name, tensor in zip(self.layout.carried, self.initial_carried, strict=True)
        }


def program_examples(task: nn.Module, family: ModelFamily) -> ProgramExamples:
    """Traces the task's initial state at two source lengths to find every dynamic dim.

    A dim of a constant that differs between the two is the source length; dim 0 is always
    the rows; dim 3 of a growing cache counts the steps.
    """
    rows, steps, source, other_source = 3, 4, 7, 9
    limit = max_positions(task)
    vocab_size = task.config.embedding.vocab_size
    generator = torch.Generator().manual_seed(0)
    device = next(task.parameters()).device  # traced where the task is

    def sources(length: int) -> tuple[torch.Tensor, torch.Tensor]:
        src_ids = torch.randint(4, vocab_size, (rows, length), generator=generator)
        src_paddings = torch.zeros(rows, length)
        src_paddings[1, length - 2 :] = 1.0
        return src_ids.to(device), src_paddings.to(device)

    encoder_inputs = sources(source)
    with torch.no_grad():
        state = initial_state(task, family, *encoder_inputs)
        other = initial_state(task, family, *sources(other_source))
    layout = StateLayout.of(state, family)
    n = Dim("rows", min=1, max=MAX_ROWS)
    s = Dim("source_length", min=1, max=limit)
    t = Dim("steps", min=0, max=limit - 1)
    carried, carried_dims = [], []
    for tensor in layout.tensors(state, layout.carried):
        if layout.growing_caches:
            shape = list(tensor.shape)
            shape[CACHE_STEP_DIM] = steps
            tensor = torch.randn(shape, generator=generator).to(device)
            carried_dims.append({0: n, CACHE_STEP_DIM: t})
        else:
            carried_dims.append({0: n})
        carried.append(tensor)
    constant_dims = []
    for tensor, longer in zip(
        layout.tensors(state, layout.constants),
        layout.tensors(other, layout.constants),
        strict=True,
    ):
        dims: dict[int, Any] = {0: n}
        dims.update({d: s for d in range(1, tensor.dim()) if tensor.shape[d] != longer.shape[d]})
        constant_dims.append(dims)
    ids = torch.randint(4, vocab_size, (rows,), generator=generator).to(device)
    step = (
        (ids, *carried, *layout.tensors(state, layout.constants)),
        ({0: n}, *carried_dims, *constant_dims),
    )
    encoder = None
    if family.kind != LANGUAGE_MODEL:
        encoder = (encoder_inputs, ({0: n, 1: s}, {0: n, 1: s}))
    return ProgramExamples(layout, encoder, step, layout.tensors(state, layout.carried))
