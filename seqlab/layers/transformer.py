"""Transformer encoder and decoder layers and stacks (pre-LN by default, post-LN optional).

Positions inside self-attention (rotary, Shaw et al., T5 bias) are options of the
self-attention config (``relative_positions``); the decoder's incremental state is the same for
all of them.

Child configs are named by role (``self_attention``, ``cross_attention``, ``ffn``) and must
agree with their parent's ``model_dim``; a mismatch is an error, never silently fixed, so the
printed config is exactly what is built. ``encoder_config`` / ``decoder_config`` fill in every
dimension consistently from a handful of numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer, apply_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.layers.attention import MultiHeadAttention
from seqlab.layers.attention_positions import AttentionPositions, T5RelativeBias
from seqlab.layers.dropout import Dropout
from seqlab.layers.feed_forward import FeedForward


def _check_model_dims(
    owner: str, model_dim: int, **children: MultiHeadAttention.Config | FeedForward.Config
) -> None:
    for role, child in children.items():
        if child.model_dim != model_dim:
            raise ConfigError(
                f"{owner}.{role}.model_dim is {child.model_dim} but {owner}.model_dim is "
                f"{model_dim}; set both to the same value"
            )


class _ResidualLayer(Layer):
    """Residual wiring shared by encoder and decoder layers.

    Pre-LN: ``x + dropout(f(norm(x)))``. Post-LN: ``norm(x + dropout(f(x)))``.
    """

    norm_first: bool
    dropout: Dropout

    def _sublayer_input(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        return norm(x) if self.norm_first else x

    def _sublayer_output(
        self, residual: torch.Tensor, outputs: torch.Tensor, norm: nn.LayerNorm
    ) -> torch.Tensor:
        x = residual + self.dropout(outputs)
        return x if self.norm_first else norm(x)


class TransformerEncoderLayer(_ResidualLayer):
    """Self-attention then feed-forward, each with a residual connection and LayerNorm."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(512, doc="Width D of the residual stream.", at_least=1)
        self_attention: MultiHeadAttention.Config = param(
            MultiHeadAttention.Config(), doc="Self-attention block."
        )
        ffn: FeedForward.Config = param(FeedForward.Config(), doc="Feed-forward block.")
        residual_dropout_prob: float = param(
            0.1, doc="Dropout on each block's output.", at_least=0, below=1
        )
        norm_first: bool = param(True, doc="Pre-LN (True) or post-LN (False) residuals.")
        layer_norm_epsilon: float = param(1e-5, doc="LayerNorm epsilon.", above=0)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        dim = config.model_dim
        _check_model_dims(
            "TransformerEncoderLayer", dim, self_attention=config.self_attention, ffn=config.ffn
        )
        self.norm_first = config.norm_first
        self.self_attention = config.self_attention.build()
        self.self_attention_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.ffn = config.ffn.build()
        self.ffn_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.residual_dropout_prob)

    def forward(
        self,
        inputs: torch.Tensor,
        paddings: torch.Tensor,
        causal: bool = False,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Applies the layer.

        Args:
          inputs: [B, S, D].
          paddings: [B, S], 1.0 = pad.
          causal: position t attends only to positions <= t (a decoder-only language model).
          segment_ids: [B, S] of packed sequences (0 = pad): attention stays inside each
            segment. None = one sequence per row.

        Returns:
          [B, S, D]; padded positions hold arbitrary values (the stack zeroes them).
        """
        h = self._sublayer_input(inputs, self.self_attention_norm)
        h = self.self_attention(h, h, paddings, causal=causal, segment_ids=segment_ids)
        return self._feed_forward(self._sublayer_output(inputs, h, self.self_attention_norm))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ffn(self._sublayer_input(x, self.ffn_norm))
        return self._sublayer_output(x, h, self.ffn_norm)

    def extend_step(
        self, inputs: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, step: int
    ) -> torch.Tensor:
        """Applies the layer causally at one position, attending to the cached earlier ones.

        Args:
          inputs: [B, 1, D], the layer input at position ``step``.
          key_cache: [B, H, M, Dh] self-attention keys, updated in place.
          value_cache: [B, H, M, Dh] self-attention values, updated in place.
          step: position of ``inputs``.

        Returns:
          [B, 1, D], equal to position ``step`` of ``forward(x, paddings, causal=True)``.
        """
        h = self._sublayer_input(inputs, self.self_attention_norm)
        h = self.self_attention.extend_step(h, key_cache, value_cache, step)
        return self._feed_forward(self._sublayer_output(inputs, h, self.self_attention_norm))


class TransformerDecoderLayer(_ResidualLayer):
    """Causal self-attention, cross-attention to the encoder, then feed-forward."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(512, doc="Width D of the residual stream.", at_least=1)
        self_attention: MultiHeadAttention.Config = param(
            MultiHeadAttention.Config(), doc="Causal self-attention block."
        )
        cross_attention: MultiHeadAttention.Config = param(
            MultiHeadAttention.Config(), doc="Attention to the encoder outputs."
        )
        ffn: FeedForward.Config = param(FeedForward.Config(), doc="Feed-forward block.")
        residual_dropout_prob: float = param(
            0.1, doc="Dropout on each block's output.", at_least=0, below=1
        )
        norm_first: bool = param(True, doc="Pre-LN (True) or post-LN (False) residuals.")
        layer_norm_epsilon: float = param(1e-5, doc="LayerNorm epsilon.", above=0)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        dim = config.model_dim
        _check_model_dims(
            "TransformerDecoderLayer",
            dim,
            self_attention=config.self_attention,
            cross_attention=config.cross_attention,
            ffn=config.ffn,
        )
        if config.cross_attention.relative_positions is not None:
            raise ConfigError(
                "TransformerDecoderLayer.cross_attention.relative_positions must be None: "
                "relative positions are for self-attention (set self_attention's instead)"
            )
        self.norm_first = config.norm_first
        self.self_attention = config.self_attention.build()
        self.self_attention_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.cross_attention = config.cross_attention.build()
        self.cross_attention_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.ffn = config.ffn.build()
        self.ffn_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.residual_dropout_prob)

    def forward(
        self,
        targets: torch.Tensor,
        target_paddings: torch.Tensor,
        encoder_outputs: torch.Tensor,
        encoder_paddings: torch.Tensor,
    ) -> torch.Tensor:
        """Applies the layer to a whole (teacher-forced) target sequence.

        Args:
          targets: [B, T, D].
          target_paddings: [B, T], 1.0 = pad.
          encoder_outputs: [B, S, D].
          encoder_paddings: [B, S], 1.0 = pad.

        Returns:
          [B, T, D]; padded positions hold arbitrary values.
        """
        h = self._sublayer_input(targets, self.self_attention_norm)
        h = self.self_attention(h, h, target_paddings, causal=True)
        x = self._sublayer_output(targets, h, self.self_attention_norm)
        h = self._sublayer_input(x, self.cross_attention_norm)
        h = self.cross_attention(h, encoder_outputs, encoder_paddings)
        x = self._sublayer_output(x, h, self.cross_attention_norm)
        h = self.ffn(self._sublayer_input(x, self.ffn_norm))
        return self._sublayer_output(x, h, self.ffn_norm)

    def extend_step(
        self,
        inputs: torch.Tensor,
        self_key: torch.Tensor,
        self_value: torch.Tensor,
        cross_key: torch.Tensor,
        cross_value: torch.Tensor,
        encoder_paddings: torch.Tensor,
        step: int,
        return_attention: bool = False,
        history_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Applies the layer at one position, attending to the cached earlier positions.

        The N = B * K rows are K hypotheses (beams) of each of B examples, rows
        ``b * K ... b * K + K - 1`` those of example b; K = 1 outside beam search.

        Args:
          inputs: [N, 1, D], the layer input at position ``step``.
          self_key: [N, H, M, Dh] self-attention key cache, updated in place; or, with
            ``history_mask``, [B, H, M, K, Dh] never-reordered beam caches (see
            ``MultiHeadAttention.extend_step_beams``).
          self_value: the value cache, shaped as ``self_key``.
          cross_key: [B, H, S, Dh] projected encoder keys, one per example.
          cross_value: [B, H, S, Dh] projected encoder values, one per example.
          encoder_paddings: [B, S], 1.0 = pad.
          step: position of ``inputs``.
          return_attention: also return the cross-attention probabilities.
          history_mask: [B, 1, K, (step + 1) * K] boolean history of each beam, for beam
            caches; None for row caches.

        Returns:
          (outputs [N, 1, D], cross-attention probs [N, 1, S] averaged over heads, or None).
        """
        h = self._sublayer_input(inputs, self.self_attention_norm)
        if history_mask is None:
            h = self.self_attention.extend_step(h, self_key, self_value, step)
        else:
            beams = h.reshape(self_key.shape[0], -1, h.shape[-1])  # [B, K, D]
            h = self.self_attention.extend_step_beams(
                beams, self_key, self_value, step, history_mask
            ).reshape(h.shape)
        x = self._sublayer_output(inputs, h, self.self_attention_norm)
        # The K beams of an example attend to its encoder keys/values as K query positions of
        # one row, so the keys/values are never copied per beam.
        h = self._sublayer_input(x, self.cross_attention_norm)
        h = h.reshape(cross_key.shape[0], -1, h.shape[-1])  # [B, K, D]
        probs = None
        if return_attention:
            h, probs = self.cross_attention.attend_with_probs(
                h, cross_key, cross_value, encoder_paddings
            )
            probs = probs.flatten(0, 1)[:, None]
        else:
            h = self.cross_attention.attend(h, cross_key, cross_value, encoder_paddings)
        x = self._sublayer_output(x, h.reshape(x.shape), self.cross_attention_norm)
        h = self.ffn(self._sublayer_input(x, self.ffn_norm))
        return self._sublayer_output(x, h, self.ffn_norm), probs


# reorder_state's double buffers: cache name -> name of its spare.
_SPARE_CACHES = {"self_key": "self_key_spare", "self_value": "self_value_spare"}

_FINAL_NORM_DOC = (
    "LayerNorm after the last layer (pre-LN stacks need it; Vaswani et al.'s post-LN has "
    "none); None = exactly when the layers are pre-LN."
)


def _build_stack(
    config: TransformerEncoder.Config | TransformerDecoder.Config,
) -> tuple[nn.ModuleList, nn.LayerNorm | None]:
    """The stack's layers and its final LayerNorm (or None)."""
    layer = config.layer
    layers = nn.ModuleList([layer.build() for _ in range(config.num_layers)])
    final_norm = layer.norm_first if config.final_norm is None else config.final_norm
    norm = nn.LayerNorm(layer.model_dim, eps=layer.layer_norm_epsilon) if final_norm else None
    return layers, norm


class TransformerEncoder(Layer):
    """A stack of encoder layers, by default with a final LayerNorm when they are pre-LN."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        num_layers: int = param(6, doc="Number of stacked layers.", at_least=1)
        layer: TransformerEncoderLayer.Config = param(
            TransformerEncoderLayer.Config(), doc="Config of every layer in the stack."
        )
        final_norm: bool | None = param(None, doc=_FINAL_NORM_DOC)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.layers, self.final_norm = _build_stack(config)

    def forward(
        self,
        inputs: torch.Tensor,
        paddings: torch.Tensor,
        causal: bool = False,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encodes a padded batch.

        Args:
          inputs: [B, S, D] embedded (and position-encoded) source.
          paddings: [B, S], 1.0 = pad.
          causal: causal self-attention (the stack of a decoder-only language model).
          segment_ids: [B, S] of packed sequences (0 = pad), or None; see the layer.

        Returns:
          [B, S, D], zero at padded positions.
        """
        x = inputs
        for layer in self.layers:
            x = layer(x, paddings, causal=causal, segment_ids=segment_ids)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return apply_paddings(x, paddings)


class TransformerDecoder(Layer):
    """A stack of decoder layers with a full-sequence and an incremental (step) interface.

    The incremental state is a ``NestedMap`` of batch-major tensors. It has N = B * K rows of
    hypotheses, K per example (rows ``b * K ... b * K + K - 1`` belong to example b); K = 1
    until ``expand_state`` makes K beams per example for beam search:

    - ``step``: python int, the position the next ``extend_step`` fills.
    - ``beam_size``: python int, K.
    - ``self_key``, ``self_value``: [N, L, H, M, Dh] preallocated self-attention caches
      (L layers, M = max_length), written in place. After ``expand_state`` with K > 1 they
      are beam caches [B, L, H, M, K, Dh] that are never reordered: beam k writes slot k.
    - ``history``: (K > 1 only) [B, K, M] long, the slot that holds position t of beam k's
      own history; ``reorder_state`` reorders this instead of the caches.
    - ``cross_key``, ``cross_value``: [B, L, H, S, Dh] encoder keys/values, computed once and
      shared by the K beams of an example.
    - ``self_key_spare``, ``self_value_spare``: (K = 1 only) caches of the same shape that an
      in-place ``reorder_state`` gathers into and then swaps with ``self_key`` /
      ``self_value``. Their positions from ``step`` on hold stale values, never read.
    - ``encoder_paddings``: [B, S].
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        num_layers: int = param(6, doc="Number of stacked layers.", at_least=1)
        layer: TransformerDecoderLayer.Config = param(
            TransformerDecoderLayer.Config(), doc="Config of every layer in the stack."
        )
        final_norm: bool | None = param(None, doc=_FINAL_NORM_DOC)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.layers, self.final_norm = _build_stack(config)

    def forward(
        self,
        targets: torch.Tensor,
        target_paddings: torch.Tensor,
        encoder_outputs: torch.Tensor,
        encoder_paddings: torch.Tensor,
    ) -> torch.Tensor:
        """Decodes a whole (teacher-forced) target sequence.

        Args:
          targets: [B, T, D] embedded (and position-encoded) decoder inputs.
          target_paddings: [B, T], 1.0 = pad.
          encoder_outputs: [B, S, D].
          encoder_paddings: [B, S], 1.0 = pad.

        Returns:
          [B, T, D], zero at padded positions.
        """
        x = targets
        for layer in self.layers:
            x = layer(x, target_paddings, encoder_outputs, encoder_paddings)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return apply_paddings(x, target_paddings)

    def init_state(
        self, encoder_outputs: torch.Tensor, encoder_paddings: torch.Tensor, max_length: int
    ) -> NestedMap:
        """Prepares incremental decoding of up to ``max_length`` steps.

        Args:
          encoder_outputs: [B, S, D].
          encoder_paddings: [B, S], 1.0 = pad.
          max_length: number of positions the self-attention caches hold.

        Returns:
          The state described in the class docstring, with ``step = 0``.
        """
        attention = self.layers[0].self_attention
        cache_shape = (
            encoder_outputs.shape[0],
            len(self.layers),
            attention.num_heads,
            max_length,
            attention.head_dim,
        )
        cross = [layer.cross_attention.project_key_value(encoder_outputs) for layer in self.layers]
        return NestedMap(
            step=0,
            beam_size=1,
            encoder_paddings=encoder_paddings,
            self_key=encoder_outputs.new_zeros(cache_shape),
            self_value=encoder_outputs.new_zeros(cache_shape),
            cross_key=torch.stack([key for key, _ in cross], dim=1),
            cross_value=torch.stack([value for _, value in cross], dim=1),
        )

    def extend_step(
        self, state: NestedMap, step_inputs: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, NestedMap, torch.Tensor | None]:
        """Decodes one position, updating the caches in ``state`` in place.

        Args:
          state: from ``init_state`` / earlier ``extend_step`` / ``reorder_state``.
          step_inputs: [N, 1, D] embedded (and position-encoded) input at ``state.step``.
          return_attention: also return the last layer's cross-attention probabilities.

        Returns:
          (outputs [N, 1, D], state with ``step`` advanced by one, cross-attention probs
          [N, S] of the last layer averaged over heads, or None).
        """
        step = state.step
        max_length = state.self_key.shape[3]
        if step >= max_length:
            raise ValueError(
                f"extend_step at step {step} but init_state allocated max_length={max_length}; "
                "pass a larger max_length to init_state"
            )
        history_mask = None
        if state.beam_size > 1:
            # Beam k writes slot k at this step; it may attend where its history points.
            slots = torch.arange(state.beam_size, device=step_inputs.device)
            state.history[:, :, step] = slots
            history = state.history[:, :, : step + 1, None] == slots  # [B, K, step + 1, K]
            history_mask = history.flatten(2)[:, None]
        x = step_inputs
        probs = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x, probs = layer.extend_step(
                x,
                state.self_key[:, i],
                state.self_value[:, i],
                state.cross_key[:, i],
                state.cross_value[:, i],
                state.encoder_paddings,
                step,
                return_attention=return_attention and i == last,
                history_mask=history_mask,
            )
        if self.final_norm is not None:
            x = self.final_norm(x)
        state.step = step + 1
        return x, state, None if probs is None else probs[:, 0]

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """Makes K = ``beam_size`` beams of each row (for beam search).

        The self-attention caches become beam caches with a slot per beam, whose filled
        positions all sit in slot 0, the history every beam starts from; the cross-attention
        state stays one per example. Afterwards ``reorder_state`` accepts only within-example
        reorders, and moves no cache.

        Args:
          state: decoder state with N rows, not expanded before.
          beam_size: K.

        Returns:
          The state with N * K rows, row ``n * K + k`` a copy of row n.
        """
        kept = NestedMap({k: v for k, v in state.items() if k not in _SPARE_CACHES.values()})
        if beam_size == 1:
            return kept
        if state.beam_size != 1:
            raise ValueError(f"expand_state: the state already has {state.beam_size} beams")
        step, (rows, _, _, max_length, _) = state.step, state.self_key.shape
        for name in ("self_key", "self_value"):
            cache = state[name]
            beams = cache.new_zeros(cache.shape[:4] + (beam_size,) + cache.shape[4:])
            beams[:, :, :, :step, 0] = cache[:, :, :, :step]
            kept[name] = beams
        kept.beam_size = beam_size
        kept.history = torch.zeros(
            rows, beam_size, max_length, dtype=torch.long, device=state.self_key.device
        )
        return kept

    def select_examples(self, state: NestedMap, examples: torch.Tensor) -> NestedMap:
        """Keeps only the examples ``examples``, each with all its K beams (batch compaction).

        Args:
          state: decoder state of B examples (N = B * K rows).
          examples: [B'] long, increasing indices into the B examples.

        Returns:
          The state of the B' examples (B' * K rows) in that order. Only the filled positions
          of the self-attention caches are copied; the spare caches are dropped (the next
          reorder allocates them again).
        """
        step = state.step
        kept = NestedMap()
        for name, value in state.items():
            if name in _SPARE_CACHES.values():
                continue
            if name in _SPARE_CACHES:  # [B, L, H, M, ...]: positions from `step` on unused
                kept[name] = value.new_empty((examples.shape[0], *value.shape[1:]))
                torch.index_select(
                    value[:, :, :, :step], 0, examples, out=kept[name][:, :, :, :step]
                )
            elif isinstance(value, torch.Tensor):
                kept[name] = value.index_select(0, examples)
            else:
                kept[name] = value
        return kept

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Gathers the rows ``indices`` of the state (for beam search).

        Args:
          state: decoder state with N rows.
          indices: [M] long indices into the rows. After ``expand_state``: M = N and row m
            stays in its example, ``indices[m] // K == m // K`` (not checked), so only the
            self-attention caches move. Before: any gather, M may differ from N.

        Returns:
          The state with M rows. After ``expand_state`` only the [B, K, M] beam histories are
          reordered, no cache. Otherwise, when M equals N, only the filled prefix of the
          self-attention caches is gathered, into the spare caches, which then swap places
          with them: no allocation after the first such step. In both cases the state is
          updated in place; the state passed in must not be used afterwards.
        """
        step, beams = state.step, state.beam_size
        num_rows = state.self_key.shape[0] * beams
        if beams > 1:
            if indices.shape[0] != num_rows:
                raise ValueError(
                    f"reorder_state after expand_state needs one index per row ({num_rows}), "
                    f"got {indices.shape[0]}"
                )
            first_rows = beams * torch.arange(num_rows // beams, device=indices.device)
            parents = indices.view(-1, beams) - first_rows[:, None]  # [B, K] beam in example
            state.history = state.history.gather(1, parents[:, :, None].expand_as(state.history))
            return state
        if indices.shape[0] != num_rows or step == 0:
            kept = NestedMap({k: v for k, v in state.items() if k not in _SPARE_CACHES.values()})
            return kept.transform(
                lambda v: v.index_select(0, indices) if isinstance(v, torch.Tensor) else v
            )
        for name, spare_name in _SPARE_CACHES.items():
            cache = state[name]
            spare = state.get(spare_name)
            if spare is None:
                spare = torch.empty_like(cache)
            # A gather into a second preallocated cache reads and writes every row once and
            # allocates nothing; gathering into a new tensor and copying it back costs twice
            # the traffic plus a page fault per 4 KiB of the fresh tensor, every step.
            torch.index_select(cache[:, :, :, :step], 0, indices, out=spare[:, :, :, :step])
            state[name], state[spare_name] = spare, cache
        for name in ("cross_key", "cross_value", "encoder_paddings"):
            state[name] = state[name].index_select(0, indices)
        return state


def encoder_config(
    num_layers: int = 6,
    model_dim: int = 512,
    num_heads: int = 8,
    hidden_dim: int = 2048,
    dropout_prob: float = 0.1,
    attention_dropout_prob: float = 0.0,
    ffn_dropout_prob: float = 0.0,
    activation: Literal["relu", "gelu"] = "relu",
    norm_first: bool = True,
    final_norm: bool | None = None,
    relative_positions: AttentionPositions.Config | None = None,
) -> TransformerEncoder.Config:
    """A ``TransformerEncoder.Config`` with every dimension filled in consistently.

    Args:
      final_norm: LayerNorm after the stack; None = when ``norm_first`` (written out).
      relative_positions: positions inside self-attention; its ``head_dim`` / ``num_heads``
        are set here from ``model_dim`` and ``num_heads``.
    """
    if relative_positions is not None:
        head_dim = model_dim // num_heads
        relative_positions = fit_positions_to_heads(relative_positions, num_heads, head_dim)
    return TransformerEncoder.Config(
        num_layers=num_layers,
        final_norm=norm_first if final_norm is None else final_norm,
        layer=TransformerEncoderLayer.Config(
            model_dim=model_dim,
            self_attention=MultiHeadAttention.Config(
                model_dim=model_dim,
                num_heads=num_heads,
                dropout_prob=attention_dropout_prob,
                relative_positions=relative_positions,
            ),
            ffn=FeedForward.Config(
                model_dim=model_dim,
                hidden_dim=hidden_dim,
                activation=activation,
                dropout_prob=ffn_dropout_prob,
            ),
            residual_dropout_prob=dropout_prob,
            norm_first=norm_first,
        ),
    )


def decoder_config(
    num_layers: int = 6,
    model_dim: int = 512,
    num_heads: int = 8,
    hidden_dim: int = 2048,
    dropout_prob: float = 0.1,
    attention_dropout_prob: float = 0.0,
    ffn_dropout_prob: float = 0.0,
    activation: Literal["relu", "gelu"] = "relu",
    norm_first: bool = True,
    final_norm: bool | None = None,
    relative_positions: AttentionPositions.Config | None = None,
) -> TransformerDecoder.Config:
    """A ``TransformerDecoder.Config`` with every dimension filled in consistently.

    Its layers are the encoder layers of :func:`encoder_config` plus a cross-attention of the
    same shape as their self-attention, without relative positions. A T5 bias becomes
    unidirectional here: later keys are masked, so all its buckets go to the past.
    """
    if isinstance(relative_positions, T5RelativeBias.Config):
        relative_positions = dataclasses.replace(relative_positions, bidirectional=False)
    encoder = encoder_config(
        num_layers, model_dim, num_heads, hidden_dim, dropout_prob,
        attention_dropout_prob, ffn_dropout_prob, activation, norm_first, final_norm,
        relative_positions,
    )  # fmt: skip
    layer = encoder.layer
    cross_attention = layer.self_attention.copy()
    cross_attention.relative_positions = None
    return TransformerDecoder.Config(
        num_layers=num_layers,
        final_norm=encoder.final_norm,
        layer=TransformerDecoderLayer.Config(
            model_dim=layer.model_dim,
            self_attention=layer.self_attention,
            cross_attention=cross_attention,
            ffn=layer.ffn,
            residual_dropout_prob=layer.residual_dropout_prob,
            norm_first=layer.norm_first,
        ),
    )


def fit_positions_to_heads(
    config: AttentionPositions.Config, num_heads: int, head_dim: int
) -> AttentionPositions.Config:
    """A copy of ``config`` with its ``num_heads`` / ``head_dim`` fields (those it has) set."""
    fields = {f.name for f in dataclasses.fields(config)}
    sizes = {"num_heads": num_heads, "head_dim": head_dim}
    return dataclasses.replace(config, **{k: v for k, v in sizes.items() if k in fields})
