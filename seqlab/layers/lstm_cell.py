"""An LSTM cell with optional per-gate and cell layer normalization, projection and clipping.

The cell covers the variants RNMT+ (Chen et al. 2018) and Lingvo's LSTM cells use: a plain
LSTM; per-gate layer normalization of the gate pre-activations (Lingvo's
LayerNormalizedLSTMCellSimple, "per-gate layer normalization" in RNMT+); layer normalization of
the cell before the output nonlinearity (Ba et al. 2016); an output projection (LSTMP, Sak et
al. 2014); clipping of cell values; and a bias added to the forget gate at initialization.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from seqlab.core.config import ConfigError, param
from seqlab.core.layer import Layer
from seqlab.core.nested_map import NestedMap


class LSTMCell(Layer):
    """One LSTM layer, stepped with ``extend_step`` or run over a sequence with ``forward``.

    The four gates come from one fused matmul each for the input and the recurrent state; the
    gate layout is ``[input, forget, output, candidate]``, so the three sigmoid gates are one
    contiguous slice. ``forward`` projects the inputs of all T steps with a single matmul and
    loops only over the recurrent part.

    The state is ``NestedMap(m=[B, P], c=[B, H])``: ``m`` the output (after the projection,
    P = ``projection_dim`` or H), ``c`` the cell (H = ``num_units``). A padded step leaves the
    state unchanged and outputs the unchanged ``m``.

    The input width D is not a config field: the stack that owns the cell knows it from its
    own dimensions and passes it to the constructor.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        num_units: int = param(1024, doc="Cell width H (also the gate width).", at_least=1)
        projection_dim: int = param(
            0,
            doc="If > 0, project the cell output to this width P (LSTMP); 0 = output H.",
            at_least=0,
        )
        forget_gate_bias: float = param(1.0, doc="Initial bias of the forget gate.")
        cell_value_cap: float = param(
            0.0, doc="Clip cell values to [-cap, cap] after every step; 0 disables.", at_least=0
        )
        gate_layer_norm: bool = param(
            False, doc="Layer-normalize each gate's pre-activation separately (RNMT+)."
        )
        cell_layer_norm: bool = param(
            False, doc="Layer-normalize the cell before the output tanh (Ba et al. 2016)."
        )
        layer_norm_epsilon: float = param(1e-6, doc="Epsilon of the layer normalizations.", above=0)

    config: Config

    def __init__(self, config: Config, input_dim: int) -> None:
        super().__init__(config)
        if config.num_units < 1 or config.projection_dim < 0 or input_dim < 1:
            raise ConfigError(
                f"LSTMCell needs num_units >= 1, projection_dim >= 0 and an input width >= 1, "
                f"got num_units={config.num_units}, projection_dim={config.projection_dim}, "
                f"input width {input_dim}"
            )
        if config.cell_value_cap < 0:
            raise ConfigError(
                f"LSTMCell.cell_value_cap must be >= 0 (0 disables), got {config.cell_value_cap}"
            )
        units = config.num_units
        self.input_dim = input_dim
        self.num_units = units
        self.output_dim = config.projection_dim or units
        self.input_proj = nn.Linear(input_dim, 4 * units, bias=False)
        self.recurrent_proj = nn.Linear(self.output_dim, 4 * units, bias=False)
        # With gate layer norm the bias is the normalization's shift (added after it);
        # otherwise it is added to the input projection.
        self.bias = nn.Parameter(torch.zeros(4 * units))
        self.gate_norm_scale = (
            nn.Parameter(torch.ones(4 * units)) if config.gate_layer_norm else None
        )
        self.cell_norm = (
            nn.LayerNorm(units, eps=config.layer_norm_epsilon) if config.cell_layer_norm else None
        )
        self.output_proj = (
            nn.Linear(units, config.projection_dim, bias=False) if config.projection_dim else None
        )
        bound = 1.0 / math.sqrt(units)
        for weight in (self.input_proj.weight, self.recurrent_proj.weight):
            nn.init.uniform_(weight, -bound, bound)
        if self.output_proj is not None:
            nn.init.uniform_(self.output_proj.weight, -bound, bound)
        with torch.no_grad():
            self.bias[units : 2 * units] = config.forget_gate_bias

    def init_state(self, batch_size: int) -> NestedMap:
        """The zero state: ``NestedMap(m=[B, P], c=[B, H])`` in the parameters' dtype."""
        weight = self.input_proj.weight
        return NestedMap(
            m=weight.new_zeros(batch_size, self.output_dim),
            c=weight.new_zeros(batch_size, self.num_units),
        )

    def project_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """The input's share of the gate pre-activations, for any number of steps at once.

        Args:
          inputs: [..., D].

        Returns:
          [..., 4H], to be passed to ``step``.
        """
        projected = self.input_proj(inputs)
        return projected if self.gate_norm_scale is not None else projected + self.bias

    def step(
        self, projected_inputs: torch.Tensor, padding: torch.Tensor, state: NestedMap
    ) -> tuple[torch.Tensor, NestedMap]:
        """One step from inputs already passed through ``project_inputs``.

        Args:
          projected_inputs: [B, 4H].
          padding: [B], 1.0 = padded step (the state is kept).
          state: ``NestedMap(m=[B, P], c=[B, H])``.

        Returns:
          (output [B, P], new state); the output is the new state's ``m``.
        """
        config = self.config
        units = self.num_units
        # Both projections are called as modules, so a rewrite that swaps them (QAT's
        # fake-quantized Linear) applies to the gates too.
        gates = projected_inputs + self.recurrent_proj(state.m)
        if self.gate_norm_scale is not None:
            normed = F.layer_norm(
                gates.unflatten(-1, (4, units)), (units,), eps=config.layer_norm_epsilon
            )
            gates = torch.addcmul(self.bias, normed.flatten(-2), self.gate_norm_scale)
        # split/unbind rather than slicing: a slice's backward fills a zero tensor of the full
        # input shape, which in the time loop costs O(T^2).
        sigmoid_part, candidate_part = gates.split([3 * units, units], dim=-1)
        input_gate, forget_gate, output_gate = torch.sigmoid(sigmoid_part).chunk(3, dim=-1)
        candidate = torch.tanh(candidate_part)
        cell = torch.addcmul(forget_gate * state.c, input_gate, candidate)
        if config.cell_value_cap > 0:
            cell = cell.clamp(-config.cell_value_cap, config.cell_value_cap)
        shown_cell = cell if self.cell_norm is None else self.cell_norm(cell)
        output = output_gate * torch.tanh(shown_cell)
        if self.output_proj is not None:
            output = self.output_proj(output)
        keep = (padding < 0.5)[:, None]
        output = torch.where(keep, output, state.m)
        return output, NestedMap(m=output, c=torch.where(keep, cell, state.c))

    def extend_step(
        self, inputs: torch.Tensor, padding: torch.Tensor, state: NestedMap
    ) -> tuple[torch.Tensor, NestedMap]:
        """One step.

        Args:
          inputs: [B, D].
          padding: [B], 1.0 = padded step (the state is kept).
          state: from ``init_state`` or an earlier step.

        Returns:
          (output [B, P], new state).
        """
        return self.step(self.project_inputs(inputs), padding, state)

    def forward(
        self,
        inputs: torch.Tensor,
        paddings: torch.Tensor,
        state: NestedMap | None = None,
        reverse: bool = False,
    ) -> tuple[torch.Tensor, NestedMap]:
        """Runs the cell over a sequence.

        Args:
          inputs: [B, T, D].
          paddings: [B, T], 1.0 = pad. Padded steps keep the state wherever they are, so a
            reverse run starts at each sequence's own last real step.
          state: initial state; None = zeros.
          reverse: run from the last step to the first (the backward direction of a
            bidirectional layer).

        Returns:
          (outputs [B, T, P], final state); outputs at padded steps repeat the state's ``m``
          (the stacks zero them).
        """
        if state is None:
            state = self.init_state(inputs.shape[0])
        projected = self.project_inputs(inputs).unbind(1)
        step_paddings = paddings.unbind(1)
        steps = range(inputs.shape[1] - 1, -1, -1) if reverse else range(inputs.shape[1])
        outputs: list[torch.Tensor] = list(projected)
        for t in steps:
            outputs[t], state = self.step(projected[t], step_paddings[t], state)
        return torch.stack(outputs, dim=1), state
