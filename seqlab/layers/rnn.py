"""Stacked unidirectional and bidirectional LSTM layers over padded ``[B, T, D]`` sequences.

Both stacks wire their cells the way RNMT+ (Chen et al. 2018) does: dropout on every layer's
output, and from ``residual_start_layer`` on each layer's input added to its output. Padded
steps change neither the state nor any real output, and the stacks output zeros there.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer, apply_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.layers.dropout import Dropout
from seqlab.layers.lstm_cell import LSTMCell


class _LSTMStackBase(Layer):
    """What the two stacks share: their config, layer widths, dropout and residual wiring."""

    @dataclasses.dataclass
    class Config(Layer.Config):
        input_dim: int = param(1024, doc="Width D of the inputs.", at_least=1)
        num_layers: int = param(2, doc="Number of stacked layers.", at_least=1)
        cell: LSTMCell.Config = param(
            LSTMCell.Config(), doc="Config of every layer's cell (of both directions' cells)."
        )
        dropout_prob: float = param(
            0.0, doc="Dropout on every layer's output.", at_least=0, below=1
        )
        residual_start_layer: int = param(
            2,
            doc="0-based first layer that adds its input to its output; >= num_layers: none.",
            at_least=0,
        )

    config: Config
    #: Cells per layer whose outputs are concatenated.
    num_directions: ClassVar[int] = 1

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        name = type(self).__name__
        if config.num_layers < 1:
            raise ConfigError(f"{name}.num_layers must be >= 1, got {config.num_layers}")
        self.residual_start_layer = config.residual_start_layer
        self.dropout = Dropout(config.dropout_prob)
        self.output_dim = self.num_directions * (
            config.cell.projection_dim or config.cell.num_units
        )
        # The main input width of every layer (before any side input).
        self.layer_input_dims = [config.input_dim] + [self.output_dim] * (config.num_layers - 1)
        for i, input_dim in enumerate(self.layer_input_dims):
            if i >= self.residual_start_layer and input_dim != self.output_dim:
                raise ConfigError(
                    f"{name}: layer {i} has a residual connection (residual_start_layer="
                    f"{self.residual_start_layer}) but its input width {input_dim} differs "
                    f"from its output width {self.output_dim}; raise residual_start_layer or "
                    "make the widths equal"
                )

    def _combine(self, index: int, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s output after dropout, plus its input from the residual start on."""
        outputs = self.dropout(outputs)
        return outputs + inputs if index >= self.residual_start_layer else outputs


class LSTMStack(_LSTMStackBase):
    """Unidirectional stacked LSTM, run over a whole sequence or one step at a time.

    An optional side input (e.g. an attention context) is concatenated to the input of every
    layer; residual connections add only the main input. The incremental state is
    ``NestedMap(layer0=<state of cell 0>, layer1=..., ...)``, so that every leaf is a tensor with
    the row as dim 0 (a beam search reorders it with one ``index_select`` per leaf).
    """

    @dataclasses.dataclass
    class Config(_LSTMStackBase.Config):
        side_input_dim: int = param(
            0,
            doc="Width of a side input concatenated to every layer's input; 0 = none.",
            at_least=0,
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cells = nn.ModuleList(
            [config.cell.build(d + config.side_input_dim) for d in self.layer_input_dims]
        )

    def _layer_inputs(self, x: torch.Tensor, side_inputs: torch.Tensor | None) -> torch.Tensor:
        if (side_inputs is None) != (self.config.side_input_dim == 0):
            raise ValueError(
                f"LSTMStack with side_input_dim={self.config.side_input_dim} got "
                f"{'no' if side_inputs is None else 'a'} side input"
            )
        return x if side_inputs is None else torch.cat([x, side_inputs], dim=-1)

    def forward(
        self,
        inputs: torch.Tensor,
        paddings: torch.Tensor,
        side_inputs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Runs the stack from the zero state.

        Args:
          inputs: [B, T, D].
          paddings: [B, T], 1.0 = pad.
          side_inputs: [B, T, C] concatenated to every layer's input, when side_input_dim > 0.

        Returns:
          [B, T, P] outputs of the top layer, zero at padded steps.
        """
        x = inputs
        for i, cell in enumerate(self.cells):
            outputs, _ = cell(self._layer_inputs(x, side_inputs), paddings)
            x = self._combine(i, x, outputs)
        return apply_paddings(x, paddings)

    def init_state(self, batch_size: int) -> NestedMap:
        """The zero state of every layer."""
        return NestedMap(
            {f"layer{i}": cell.init_state(batch_size) for i, cell in enumerate(self.cells)}
        )

    def extend_step(
        self,
        inputs: torch.Tensor,
        padding: torch.Tensor,
        state: NestedMap,
        side_inputs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, NestedMap]:
        """One step of every layer.

        Args:
          inputs: [B, D].
          padding: [B], 1.0 = padded step (states are kept, the output is zero).
          state: from ``init_state`` or an earlier step.
          side_inputs: [B, C], when side_input_dim > 0.

        Returns:
          (outputs [B, P], new state), equal to step t of ``forward``.
        """
        x = inputs
        new_state = NestedMap()
        for i, cell in enumerate(self.cells):
            key = f"layer{i}"
            outputs, new_state[key] = cell.extend_step(
                self._layer_inputs(x, side_inputs), padding, state[key]
            )
            x = self._combine(i, x, outputs)
        return x.masked_fill((padding > 0.5)[:, None], 0.0), new_state


class BidirectionalLSTMStack(_LSTMStackBase):
    """Bidirectional stacked LSTM (the RNMT+ encoder's layers).

    Every layer runs a forward and a backward cell over its input and concatenates their
    outputs, ``[B, T, 2P]``, as the next layer's input. The backward cell starts at each
    sequence's own last real step, wherever the padding is.
    """

    @dataclasses.dataclass
    class Config(_LSTMStackBase.Config):
        """The shared stack fields; ``cell`` configures both directions."""

    config: Config
    num_directions = 2

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.forward_cells = nn.ModuleList([config.cell.build(d) for d in self.layer_input_dims])
        self.backward_cells = nn.ModuleList([config.cell.build(d) for d in self.layer_input_dims])

    def forward(self, inputs: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
        """Encodes a padded batch.

        Args:
          inputs: [B, T, D].
          paddings: [B, T], 1.0 = pad.

        Returns:
          [B, T, 2P], forward then backward outputs of the top layer, zero at padded steps.
        """
        x = inputs
        for i, (forward_cell, backward_cell) in enumerate(
            zip(self.forward_cells, self.backward_cells, strict=True)
        ):
            forward_outputs, _ = forward_cell(x, paddings)
            backward_outputs, _ = backward_cell(x, paddings, reverse=True)
            outputs = torch.cat([forward_outputs, backward_outputs], dim=-1)
            x = self._combine(i, x, outputs)
        return apply_paddings(x, paddings)
