"""The interface of attention from a recurrent decoder over an encoded source.

RNMT+ and Listen-Attend-Spell decoders attend with one query per decoder step over the
encoder outputs. A :class:`SourceAttention` splits that into three calls, so decoding never
recomputes anything that depends only on the source:

- ``preprocess_source(source, source_values, source_paddings)`` once per batch of sentences:
  key projections and the zeroed values, as a ``NestedMap`` with one row per example.
- ``init_state(preprocessed, batch_size)``: the recurrent attention state (empty for content
  attention; the previous and cumulative alignments for location-sensitive attention).
- ``extend_step(query, preprocessed, state)`` per decoder step, or ``forward(query,
  preprocessed)`` for all teacher-forced queries at once.

Beam search (see ``seqlab.decoding.step_model``) keeps the preprocessed source once per
example: the state and the queries have N = B * K rows, K per example (row ``b * K + k`` is beam
k of example b), and ``extend_step`` attends with the K queries of an example as K query
positions over that example's keys. ``expand_state`` / ``reorder_state`` therefore touch only
the state; ``reorder_source`` gathers the preprocessed source for an arbitrary gather of
examples (before any beam expansion).

Every leaf of the preprocessed source and of the state is a tensor whose dim 0 is the row
(example or hypothesis), so these reorders are one ``index_select`` per leaf.
"""

from __future__ import annotations

import dataclasses

import torch

from seqlab.core.config import param
from seqlab.core.layer import Layer
from seqlab.core.nested_map import NestedMap


class SourceAttention(Layer):
    """Base of source attentions: ``context = sum_s probs[s] * source_values[s]``.

    A content attention defines ``compute_source_keys`` and ``compute_energies``; a stateful
    one also ``init_state`` and ``update_state`` and sets ``is_stateful``. Padded source
    positions get exactly zero probability and the probabilities of a row sum to one over its
    real positions (a row with no real position gets all zeros and a zero context).

    NestedMap keys must not shadow dict methods (``keys``, ``values``, ``items``), hence
    ``source_keys`` / ``source_values``.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        query_dim: int = param(1024, doc="Width Dq of the queries (decoder states).")
        source_dim: int = param(1024, doc="Width Dk of the source the keys are computed from.")

    config: Config

    #: Whether the energies depend on earlier steps' probabilities (then ``forward`` steps).
    is_stateful: bool = False

    # ---- to be defined by subclasses ----------------------------------------------------------
    def compute_source_keys(self, source: torch.Tensor) -> torch.Tensor:
        """[B, S, Dk] source -> [B, S, ...] keys, the per-sentence part of the energies."""
        raise NotImplementedError(f"{type(self).__name__} must define compute_source_keys")

    def compute_energies(
        self, query: torch.Tensor, preprocessed: NestedMap, state: NestedMap
    ) -> torch.Tensor:
        """Unnormalized scores of every source position for Q queries per example.

        Args:
          query: [B, Q, Dq], Q queries of each example (beams or decoder steps).
          preprocessed: from ``preprocess_source``, B rows.
          state: B * Q rows (query q of example b in row ``b * Q + q``).

        Returns:
          [B, Q, S] energies; values at padded positions are ignored.
        """
        raise NotImplementedError(f"{type(self).__name__} must define compute_energies")

    def init_state(self, preprocessed: NestedMap, batch_size: int) -> NestedMap:
        """The state before the first step: empty for content attention.

        Args:
          preprocessed: from ``preprocess_source``.
          batch_size: number of rows N of the state (a multiple of the source's B).
        """
        return NestedMap()

    def update_state(self, state: NestedMap, probs: torch.Tensor) -> NestedMap:
        """The state after a step that produced ``probs`` [N, S]; content attention: as is."""
        return state

    # ---- the interface ------------------------------------------------------------------------
    def preprocess_source(
        self,
        source: torch.Tensor,
        source_values: torch.Tensor,
        source_paddings: torch.Tensor,
    ) -> NestedMap:
        """Computes everything that depends only on the source, once per batch.

        Args:
          source: [B, S, Dk] the keys are computed from (the encoder outputs).
          source_values: [B, S, Dv] averaged into the context (often the same tensor).
          source_paddings: [B, S], 1.0 = pad.

        Returns:
          NestedMap(source_keys [B, S, ...], source_values [B, S, Dv], paddings [B, S]);
          every leaf is a tensor with the example as dim 0. The values are zeroed at padded
          positions by a fill, so that not even a NaN there can leak into the context.
        """
        self.check_source(source, source_values, source_paddings)
        return NestedMap(
            source_keys=self.compute_source_keys(source),
            source_values=source_values.masked_fill(source_paddings[..., None] > 0.5, 0.0),
            paddings=source_paddings,
        )

    def extend_step(
        self, query: torch.Tensor, preprocessed: NestedMap, state: NestedMap
    ) -> tuple[torch.Tensor, torch.Tensor, NestedMap]:
        """Attends with one query per row.

        Args:
          query: [N, Dq] with N = B * K: K queries (beams) per example of the source.
          preprocessed: from ``preprocess_source``, B rows.
          state: N rows, from ``init_state`` / ``extend_step`` / ``reorder_state``.

        Returns:
          (context [N, Dv], probs [N, S], new state).
        """
        num_examples = preprocessed.paddings.shape[0]
        if query.shape[0] % num_examples:
            raise ValueError(
                f"{type(self).__name__}.extend_step: {query.shape[0]} query rows are not a "
                f"multiple of the {num_examples} source rows"
            )
        energies = self.compute_energies(
            query.reshape(num_examples, -1, query.shape[-1]), preprocessed, state
        )
        probs = masked_softmax(energies, preprocessed.paddings)
        context = torch.bmm(probs.to(preprocessed.source_values.dtype), preprocessed.source_values)
        probs = probs.flatten(0, 1)
        return context.flatten(0, 1), probs, self.update_state(state, probs)

    def forward(
        self, query: torch.Tensor, preprocessed: NestedMap, state: NestedMap | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attends with all T queries of each example (teacher forcing).

        Content attention scores all queries at once; stateful attention steps through them
        in order from ``state`` (default: ``init_state``), exactly as ``extend_step`` would.

        Args:
          query: [B, T, Dq].
          preprocessed: from ``preprocess_source``, B rows.
          state: B rows; used only by stateful attention.

        Returns:
          (context [B, T, Dv], probs [B, T, S]).
        """
        batch_size, num_queries, _ = query.shape
        if not self.is_stateful:
            # Stateless: the T queries of an example are just T query rows of it.
            rows = batch_size * num_queries
            context, probs, _ = self.extend_step(
                query.flatten(0, 1), preprocessed, self.init_state(preprocessed, rows)
            )
            shape = (batch_size, num_queries)
            return context.unflatten(0, shape), probs.unflatten(0, shape)
        if state is None:
            state = self.init_state(preprocessed, batch_size)
        contexts, all_probs = [], []
        for t in range(num_queries):
            context, probs, state = self.extend_step(query[:, t], preprocessed, state)
            contexts.append(context)
            all_probs.append(probs)
        return torch.stack(contexts, dim=1), torch.stack(all_probs, dim=1)

    def check_source(
        self, source: torch.Tensor, source_values: torch.Tensor, source_paddings: torch.Tensor
    ) -> None:
        """Raises ValueError unless the shapes fit ``preprocess_source`` and ``source_dim``."""
        name = type(self).__name__
        if source.dim() != 3 or source.shape[-1] != self.config.source_dim:
            raise ValueError(
                f"{name}: source must be [B, S, source_dim={self.config.source_dim}], "
                f"got {list(source.shape)}"
            )
        if source_values.shape[:2] != source.shape[:2] or source_paddings.shape != source.shape[:2]:
            raise ValueError(
                f"{name}: source_values [B, S, Dv] and source_paddings [B, S] must match source "
                f"{list(source.shape)}, got {list(source_values.shape)} and "
                f"{list(source_paddings.shape)}"
            )

    # ---- beam search ----------------------------------------------------------------------------
    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """K = ``beam_size`` copies of every row: row ``n * K + k`` is a copy of row n.

        The preprocessed source is not expanded: ``extend_step`` takes the K beams of an
        example as K queries over its one copy of the keys.
        """
        return state.transform(lambda v: v.repeat_interleave(beam_size, dim=0))

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Row m of the result is row ``indices[m]`` of ``state`` ([M] long indices).

        After ``expand_state`` the beams must stay within their example (as the beam search
        guarantees); before it, any gather is allowed if ``reorder_source`` gets the same one.
        """
        return state.transform(lambda v: v.index_select(0, indices))

    def reorder_source(self, preprocessed: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Gathers the examples ``indices`` ([M] long) of the preprocessed source."""
        return preprocessed.transform(lambda v: v.index_select(0, indices))


def masked_softmax(energies: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
    """Softmax over the source with padded positions at exactly zero probability.

    Args:
      energies: [B, Q, S].
      paddings: [B, S], 1.0 = pad.

    Returns:
      [B, Q, S] probabilities in float32 or wider, each row summing to one over its real
      positions; a row without real positions is all zeros (not NaN).
    """
    real = (paddings < 0.5)[:, None, :]
    energies = energies.float() if energies.dtype in (torch.float16, torch.bfloat16) else energies
    # A finite fill keeps all-padded rows finite; multiplying by the mask then zeroes them.
    energies = energies.masked_fill(~real, torch.finfo(energies.dtype).min)
    return energies.softmax(dim=-1) * real
