"""Transformer encoder and decoder layers and stacks (pre-LN by default, post-LN optional).

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
    dropout: nn.Dropout

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
        model_dim: int = param(512, doc="Width D of the residual stream.")
        self_attention: MultiHeadAttention.Config = param(
            MultiHeadAttention.Config(), doc="Self-attention block."
        )
        ffn: FeedForward.Config = param(FeedForward.Config(), doc="Feed-forward block.")
        residual_dropout_prob: float = param(0.1, doc="Dropout on each block's output.")
        norm_first: bool = param(True, doc="Pre-LN (True) or post-LN (False) residuals.")
        layer_norm_epsilon: float = param(1e-5, doc="LayerNorm epsilon.")

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
        self.dropout = nn.Dropout(config.residual_dropout_prob)

    def forward(self, inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """Applies the layer.

        Args:
          inputs: [B, S, D].
          paddings: [B, S], 1.0 = pad.

        Returns:
          [B, S, D]; padded positions hold arbitrary values (the stack zeroes them).
        """
        h = self._sublayer_input(inputs, self.self_attention_norm)
        h = self.self_attention(h, h, paddings)
        x = self._sublayer_output(inputs, h, self.self_attention_norm)
        h = self.ffn(self._sublayer_input(x, self.ffn_norm))
        return self._sublayer_output(x, h, self.ffn_norm)


class TransformerDecoderLayer(_ResidualLayer):
    """Causal self-attention, cross-attention to the encoder, then feed-forward."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        model_dim: int = param(512, doc="Width D of the residual stream.")
        self_attention: MultiHeadAttention.Config = param(
            MultiHeadAttention.Config(), doc="Causal self-attention block."
        )
        cross_attention: MultiHeadAttention.Config = param(
            MultiHeadAttention.Config(), doc="Attention to the encoder outputs."
        )
        ffn: FeedForward.Config = param(FeedForward.Config(), doc="Feed-forward block.")
        residual_dropout_prob: float = param(0.1, doc="Dropout on each block's output.")
        norm_first: bool = param(True, doc="Pre-LN (True) or post-LN (False) residuals.")
        layer_norm_epsilon: float = param(1e-5, doc="LayerNorm epsilon.")

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
        self.norm_first = config.norm_first
        self.self_attention = config.self_attention.build()
        self.self_attention_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.cross_attention = config.cross_attention.build()
        self.cross_attention_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.ffn = config.ffn.build()
        self.ffn_norm = nn.LayerNorm(dim, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.residual_dropout_prob)

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
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Applies the layer at one position, attending to the cached earlier positions.

        The N = B * K rows are K hypotheses (beams) of each of B examples, rows
        ``b * K ... b * K + K - 1`` those of example b; K = 1 outside beam search.

        Args:
          inputs: [N, 1, D], the layer input at position ``step``.
          self_key: [N, H, M, Dh] self-attention key cache, updated in place.
          self_value: [N, H, M, Dh] self-attention value cache, updated in place.
          cross_key: [B, H, S, Dh] projected encoder keys, one per example.
          cross_value: [B, H, S, Dh] projected encoder values, one per example.
          encoder_paddings: [B, S], 1.0 = pad.
          step: position of ``inputs``.
          return_attention: also return the cross-attention probabilities.

        Returns:
          (outputs [N, 1, D], cross-attention probs [N, 1, S] averaged over heads, or None).
        """
        h = self._sublayer_input(inputs, self.self_attention_norm)
        h = self.self_attention.extend_step(h, self_key, self_value, step)
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


def _build_stack(
    layer: TransformerEncoderLayer.Config | TransformerDecoderLayer.Config, num_layers: int
) -> tuple[nn.ModuleList, nn.LayerNorm | None]:
    """``num_layers`` layers built from ``layer``, and the final LayerNorm that pre-LN needs."""
    layers = nn.ModuleList([layer.build() for _ in range(num_layers)])
    final_norm = (
        nn.LayerNorm(layer.model_dim, eps=layer.layer_norm_epsilon) if layer.norm_first else None
    )
    return layers, final_norm


class TransformerEncoder(Layer):
    """A stack of encoder layers, with a final LayerNorm when the layers are pre-LN."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        num_layers: int = param(6, doc="Number of stacked layers.")
        layer: TransformerEncoderLayer.Config = param(
            TransformerEncoderLayer.Config(), doc="Config of every layer in the stack."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.layers, self.final_norm = _build_stack(config.layer, config.num_layers)

    def forward(self, inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """Encodes a padded batch.

        Args:
          inputs: [B, S, D] embedded (and position-encoded) source.
          paddings: [B, S], 1.0 = pad.

        Returns:
          [B, S, D], zero at padded positions.
        """
        x = inputs
        for layer in self.layers:
            x = layer(x, paddings)
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
      (L layers, M = max_length), written in place.
    - ``cross_key``, ``cross_value``: [B, L, H, S, Dh] encoder keys/values, computed once and
      shared by the K beams of an example.
    - ``encoder_paddings``: [B, S].
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        num_layers: int = param(6, doc="Number of stacked layers.")
        layer: TransformerDecoderLayer.Config = param(
            TransformerDecoderLayer.Config(), doc="Config of every layer in the stack."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.layers, self.final_norm = _build_stack(config.layer, config.num_layers)

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
            )
        if self.final_norm is not None:
            x = self.final_norm(x)
        state.step = step + 1
        return x, state, None if probs is None else probs[:, 0]

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """Makes K = ``beam_size`` beams of each row (for beam search).

        Only the self-attention caches get a row per beam; the cross-attention state stays one
        per example. Afterwards ``reorder_state`` accepts only within-example reorders.

        Args:
          state: decoder state with N rows.
          beam_size: K.

        Returns:
          The state with N * K rows, row ``n * K + k`` a copy of row n.
        """
        return NestedMap(
            state,
            beam_size=state.beam_size * beam_size,
            self_key=state.self_key.repeat_interleave(beam_size, dim=0),
            self_value=state.self_value.repeat_interleave(beam_size, dim=0),
        )

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Gathers the rows ``indices`` of the state (for beam search).

        Args:
          state: decoder state with N rows.
          indices: [M] long indices into the rows. After ``expand_state``: M = N and row m
            stays in its example, ``indices[m] // K == m // K`` (not checked), so only the
            self-attention caches move. Before: any gather, M may differ from N.

        Returns:
          The state with M rows. When M equals N (a beam search step), the self-attention
          caches are reordered in place and only their filled prefix is copied, so the step
          costs O(step) rather than O(max_length) and allocates no new cache; the state passed
          in must not be used afterwards.
        """
        step, num_rows = state.step, state.self_key.shape[0]
        if state.beam_size == 1 and (indices.shape[0] != num_rows or step == 0):
            return state.transform(
                lambda v: v.index_select(0, indices) if isinstance(v, torch.Tensor) else v
            )
        if indices.shape[0] != num_rows:
            raise ValueError(
                f"reorder_state after expand_state needs one index per row ({num_rows}), "
                f"got {indices.shape[0]}"
            )
        for name in ("self_key", "self_value"):
            cache = state[name]
            cache[:, :, :, :step] = cache[:, :, :, :step].index_select(0, indices)
        if state.beam_size == 1:
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
) -> TransformerEncoder.Config:
    """A ``TransformerEncoder.Config`` with every dimension filled in consistently."""
    return TransformerEncoder.Config(
        num_layers=num_layers,
        layer=TransformerEncoderLayer.Config(
            model_dim=model_dim,
            self_attention=MultiHeadAttention.Config(
                model_dim=model_dim, num_heads=num_heads, dropout_prob=attention_dropout_prob
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
) -> TransformerDecoder.Config:
    """A ``TransformerDecoder.Config`` with every dimension filled in consistently.

    Its layers are the encoder layers of :func:`encoder_config` plus a cross-attention of the
    same shape as their self-attention.
    """
    encoder = encoder_config(
        num_layers, model_dim, num_heads, hidden_dim, dropout_prob,
        attention_dropout_prob, ffn_dropout_prob, activation, norm_first,
    )  # fmt: skip
    layer = encoder.layer
    return TransformerDecoder.Config(
        num_layers=num_layers,
        layer=TransformerDecoderLayer.Config(
            model_dim=layer.model_dim,
            self_attention=layer.self_attention,
            cross_attention=layer.self_attention.copy(),
            ffn=layer.ffn,
            residual_dropout_prob=layer.residual_dropout_prob,
            norm_first=layer.norm_first,
        ),
    )
