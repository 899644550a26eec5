"""The RNMT+ decoder (Chen et al. 2018, "The Best of Both Worlds").

The first LSTM layer reads the target embeddings; its output queries a multi-head source
attention; the context vector is fed to every upper LSTM layer (concatenated to its input) and,
with the top layer's output, to the softmax. As there is no input feeding, the teacher-forced
pass runs the first layer over all steps, then attends with all queries at once, then runs the
upper layers.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer, apply_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.decoding.step_model import example_rows
from seqlab.layers.additive_attention import AdditiveAttention
from seqlab.layers.dropout import Dropout
from seqlab.layers.lstm_cell import LSTMCell
from seqlab.layers.multi_head_source_attention import (
    MultiHeadSourceAttention,
    multi_head_source_attention_config,
)
from seqlab.layers.rnn import LSTMStack


class RNMTDecoder(Layer):
    """First LSTM layer, multi-head source attention, upper LSTM layers, output projection.

    The incremental state is a ``NestedMap`` whose N = B * K rows are K hypotheses (beams) of
    each of B examples (rows ``b * K ... b * K + K - 1`` those of example b; K = 1 until
    ``expand_state``):

    - ``beam_size``: python int, K.
    - ``source``: the attention's preprocessed source, one row per example.
    - ``attention``: the attention's state, N rows.
    - ``first_layer``, ``upper_layers``: LSTM states, N rows.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        input_dim: int = param(1024, doc="Width of the embedded target tokens.", at_least=1)
        first_layer: LSTMCell.Config = param(
            LSTMCell.Config(), doc="The bottom LSTM layer, whose output queries the attention."
        )
        first_layer_dropout_prob: float = param(
            0.0, doc="Dropout on the first layer's output.", at_least=0, below=1
        )
        attention: MultiHeadSourceAttention.Config = param(
            MultiHeadSourceAttention.Config(), doc="Attention over the encoder outputs."
        )
        upper_layers: LSTMStack.Config = param(
            LSTMStack.Config(), doc="LSTM layers above the first; the context is a side input."
        )
        output_dim: int = param(
            1024,
            doc="Width of the output (the softmax input), projected from [top, context].",
            at_least=1,
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.first_layer = config.first_layer.build(config.input_dim)
        self.first_layer_dropout = Dropout(config.first_layer_dropout_prob)
        self.attention = config.attention.build()
        self.upper_layers = config.upper_layers.build()
        first_dim, context_dim = self.first_layer.output_dim, config.attention.output_dim
        for key, value, expected in (
            ("attention.query_dim", config.attention.query_dim, first_dim),
            ("upper_layers.input_dim", config.upper_layers.input_dim, first_dim),
            ("upper_layers.side_input_dim", config.upper_layers.side_input_dim, context_dim),
        ):
            if value != expected:
                raise ConfigError(
                    f"RNMTDecoder.{key} is {value} but must be {expected} (the width of the "
                    f"{'context' if key.endswith('side_input_dim') else 'first layer output'})"
                )
        self.output_proj = nn.Linear(self.upper_layers.output_dim + context_dim, config.output_dim)

    def forward(
        self,
        targets: torch.Tensor,
        target_paddings: torch.Tensor,
        encoder_outputs: torch.Tensor,
        encoder_paddings: torch.Tensor,
    ) -> torch.Tensor:
        """Decodes a whole (teacher-forced) target sequence.

        Args:
          targets: [B, T, D] embedded decoder inputs.
          target_paddings: [B, T], 1.0 = pad.
          encoder_outputs: [B, S, E].
          encoder_paddings: [B, S], 1.0 = pad.

        Returns:
          [B, T, output_dim], zero at padded positions.
        """
        queries, _ = self.first_layer(targets, target_paddings)
        queries = self.first_layer_dropout(queries)
        source = self.attention.preprocess_source(
            encoder_outputs, encoder_outputs, encoder_paddings
        )
        context, _ = self.attention(queries, source)
        top = self.upper_layers(queries, target_paddings, context)
        outputs = self.output_proj(torch.cat([top, context.to(top.dtype)], dim=-1))
        return apply_paddings(outputs, target_paddings)

    def init_state(
        self, encoder_outputs: torch.Tensor, encoder_paddings: torch.Tensor
    ) -> NestedMap:
        """Prepares incremental decoding of B examples.

        Args:
          encoder_outputs: [B, S, E].
          encoder_paddings: [B, S], 1.0 = pad.

        Returns:
          The state described in the class docstring.
        """
        batch_size = encoder_outputs.shape[0]
        source = self.attention.preprocess_source(
            encoder_outputs, encoder_outputs, encoder_paddings
        )
        return NestedMap(
            beam_size=1,
            source=source,
            attention=self.attention.init_state(source, batch_size),
            first_layer=self.first_layer.init_state(batch_size),
            upper_layers=self.upper_layers.init_state(batch_size),
        )

    def extend_step(
        self, state: NestedMap, step_inputs: torch.Tensor
    ) -> tuple[torch.Tensor, NestedMap, torch.Tensor]:
        """Decodes one position.

        Args:
          state: from ``init_state`` / earlier ``extend_step`` / ``reorder_state``.
          step_inputs: [N, D] embedded inputs.

        Returns:
          (outputs [N, output_dim], new state, attention probs [N, S] averaged over heads).
        """
        padding = step_inputs.new_zeros(step_inputs.shape[0])
        query, first_layer = self.first_layer.extend_step(step_inputs, padding, state.first_layer)
        query = self.first_layer_dropout(query)
        context, probs, attention = self.attention.extend_step(query, state.source, state.attention)
        top, upper_layers = self.upper_layers.extend_step(
            query, padding, state.upper_layers, context
        )
        outputs = self.output_proj(torch.cat([top, context.to(top.dtype)], dim=-1))
        new_state = NestedMap(
            state,
            attention=attention,
            first_layer=first_layer,
            upper_layers=upper_layers,
        )
        return outputs, new_state, probs

    def expand_state(self, state: NestedMap, beam_size: int) -> NestedMap:
        """Makes K = ``beam_size`` beams of each row; the source stays one row per example."""
        return NestedMap(
            state,
            beam_size=state.beam_size * beam_size,
            attention=self.attention.expand_state(state.attention, beam_size),
            first_layer=_repeat_rows(state.first_layer, beam_size),
            upper_layers=_repeat_rows(state.upper_layers, beam_size),
        )

    def reorder_state(self, state: NestedMap, indices: torch.Tensor) -> NestedMap:
        """Gathers the rows ``indices`` ([M] long) of the state.

        After ``expand_state`` the rows must stay within their example (as in beam search);
        before it any gather is allowed, and the source is gathered too.
        """
        source = state.source
        if state.beam_size == 1:
            source = self.attention.reorder_source(source, indices)
        return NestedMap(
            state,
            source=source,
            attention=self.attention.reorder_state(state.attention, indices),
            first_layer=_select_rows(state.first_layer, indices),
            upper_layers=_select_rows(state.upper_layers, indices),
        )

    def select_examples(self, state: NestedMap, examples: torch.Tensor) -> NestedMap:
        """Keeps only the examples ``examples`` ([B'] long, increasing), with all their beams.

        Returns:
          The state of the B' examples: K rows each, and their one row of the source.
        """
        rows = example_rows(examples, state.beam_size)
        return NestedMap(
            state,
            source=self.attention.reorder_source(state.source, examples),
            attention=self.attention.reorder_state(state.attention, rows),
            first_layer=_select_rows(state.first_layer, rows),
            upper_layers=_select_rows(state.upper_layers, rows),
        )


def _repeat_rows(state: NestedMap, times: int) -> NestedMap:
    return state.transform(lambda v: v.repeat_interleave(times, dim=0))


def _select_rows(state: NestedMap, indices: torch.Tensor) -> NestedMap:
    return state.transform(lambda v: v.index_select(0, indices))


def rnmt_decoder_config(
    *,
    num_layers: int,
    model_dim: int,
    encoder_dim: int,
    num_heads: int,
    dropout_prob: float,
    cell: LSTMCell.Config,
    residual_start_layer: int = 2,
) -> RNMTDecoder.Config:
    """An ``RNMTDecoder.Config`` with every dimension filled in consistently.

    Args:
      num_layers: LSTM layers in all (the first plus ``num_layers - 1`` upper layers), >= 2.
      model_dim: width of the embeddings, of every LSTM layer's output, of the attention's
        projections and context, and of the decoder output.
      encoder_dim: width of the encoder outputs the attention reads.
      num_heads: heads of the additive attention (RNMT+: 4).
      dropout_prob: dropout on every LSTM layer's output.
      cell: the LSTM cell of every layer; its output width (``projection_dim`` or
        ``num_units``) must be ``model_dim``.
      residual_start_layer: first decoder layer (0 = the first layer) with a residual
        connection, >= 1 (the first layer has none); RNMT+ starts at the third.
    """
    if num_layers < 2 or residual_start_layer < 1:
        raise ConfigError(
            f"an RNMT+ decoder needs num_layers >= 2 and residual_start_layer >= 1, got "
            f"{num_layers} and {residual_start_layer}"
        )
    if (cell.projection_dim or cell.num_units) != model_dim:
        raise ConfigError(
            f"the decoder cell's output width ({cell.projection_dim or cell.num_units}) must be "
            f"model_dim ({model_dim})"
        )
    head_dim = model_dim // max(num_heads, 1)
    return RNMTDecoder.Config(
        input_dim=model_dim,
        first_layer=cell.copy(),
        first_layer_dropout_prob=dropout_prob,
        attention=multi_head_source_attention_config(
            AdditiveAttention.Config(hidden_dim=head_dim),
            query_dim=model_dim,
            source_dim=encoder_dim,
            hidden_dim=model_dim,
            num_heads=num_heads,
            output_dim=model_dim,
        ),
        upper_layers=LSTMStack.Config(
            input_dim=model_dim,
            side_input_dim=model_dim,
            num_layers=num_layers - 1,
            cell=cell.copy(),
            dropout_prob=dropout_prob,
            residual_start_layer=residual_start_layer - 1,
        ),
        output_dim=model_dim,
    )
