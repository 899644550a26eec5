"""LSTMCell: agrees with torch's LSTM cells, layer norms, padding, clipping, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.layers.lstm_cell import LSTMCell

B, T, D, H = 3, 5, 6, 4


def make_cell(input_dim: int = D, **overrides: object) -> LSTMCell:
    torch.manual_seed(0)
    cell = LSTMCell.Config(num_units=H, **overrides).build(input_dim)
    with torch.no_grad():  # non-trivial norm parameters so that a wrong wiring shows
        for name, p in cell.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return cell


def torch_gate_order(weight: torch.Tensor) -> torch.Tensor:
    """Our [i, f, o, g] gate rows -> torch's [i, f, g, o]."""
    i, f, o, g = weight.chunk(4, dim=0)
    return torch.cat([i, f, g, o], dim=0)


def test_plain_cell_matches_torch_lstm_cell() -> None:
    cell = make_cell(forget_gate_bias=0.7)
    reference = nn.LSTMCell(D, H)
    with torch.no_grad():
        reference.weight_ih.copy_(torch_gate_order(cell.input_proj.weight))
        reference.weight_hh.copy_(torch_gate_order(cell.recurrent_proj.weight))
        reference.bias_ih.copy_(torch_gate_order(cell.bias))
        reference.bias_hh.zero_()
    x = torch.randn(T, B, D)
    state = cell.init_state(B)
    h, c = torch.zeros(B, H), torch.zeros(B, H)
    for t in range(T):
        out, state = cell.extend_step(x[t], torch.zeros(B), state)
        h, c = reference(x[t], (h, c))
        torch.testing.assert_close(out, h)
        torch.testing.assert_close(state.c, c)
    assert torch.equal(cell.bias[H : 2 * H], torch.full((H,), 0.7))


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_projected_cell_matches_torch_lstm_with_proj_size() -> None:
    cell = make_cell(projection_dim=3)
    reference = nn.LSTM(D, H, proj_size=3, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(torch_gate_order(cell.input_proj.weight))
        reference.weight_hh_l0.copy_(torch_gate_order(cell.recurrent_proj.weight))
        reference.bias_ih_l0.copy_(torch_gate_order(cell.bias))
        reference.bias_hh_l0.zero_()
        reference.weight_hr_l0.copy_(cell.output_proj.weight)
    x = torch.randn(B, T, D)
    outputs, state = cell(x, torch.zeros(B, T))
    expected, (h, c) = reference(x)
    assert outputs.shape == (B, T, 3)
    torch.testing.assert_close(outputs, expected)
    torch.testing.assert_close(state.c, c[0])
    torch.testing.assert_close(state.m, h[0])


def test_layer_norms_follow_their_formulas() -> None:
    cell = make_cell(gate_layer_norm=True, cell_layer_norm=True)
    x = torch.randn(B, D)
    state = NestedMap(m=torch.randn(B, H), c=torch.randn(B, H))
    out, new_state = cell.extend_step(x, torch.zeros(B), state)

    gates = x @ cell.input_proj.weight.t() + state.m @ cell.recurrent_proj.weight.t()
    scale, shift = cell.gate_norm_scale.view(4, H), cell.bias.view(4, H)
    normed = [F.layer_norm(g, (H,), eps=1e-6) * scale[k] + shift[k] for k, g in
              enumerate(gates.chunk(4, dim=-1))]  # fmt: skip
    i, f, o = (torch.sigmoid(g) for g in normed[:3])
    c = f * state.c + i * torch.tanh(normed[3])
    torch.testing.assert_close(new_state.c, c)
    torch.testing.assert_close(out, o * torch.tanh(cell.cell_norm(c)))


def test_padded_steps_keep_the_state() -> None:
    cell = make_cell(gate_layer_norm=True, projection_dim=3)
    state = NestedMap(m=torch.randn(B, 3), c=torch.randn(B, H))
    padding = torch.tensor([0.0, 1.0, 0.0])
    out, new_state = cell.extend_step(torch.randn(B, D), padding, state)
    assert torch.equal(new_state.m[1], state.m[1]) and torch.equal(new_state.c[1], state.c[1])
    assert torch.equal(out[1], state.m[1])
    assert not torch.equal(new_state.c[0], state.c[0])


def test_forward_equals_steps_and_reverse_equals_flipped_run() -> None:
    cell = make_cell(gate_layer_norm=True, cell_value_cap=3.0)
    x, paddings = torch.randn(B, T, D), torch.zeros(B, T)
    paddings[1, 3:] = 1.0
    outputs, final = cell(x, paddings)
    state = cell.init_state(B)
    for t in range(T):
        out, state = cell.extend_step(x[:, t], paddings[:, t], state)
        torch.testing.assert_close(outputs[:, t], out)
    torch.testing.assert_close(final.c, state.c)
    # With no padding, a reverse run is the forward run over the flipped sequence.
    backward, _ = cell(x, torch.zeros(B, T), reverse=True)
    flipped, _ = cell(x.flip(1), torch.zeros(B, T))
    torch.testing.assert_close(backward, flipped.flip(1))


def test_cell_value_cap_clips() -> None:
    x = 5.0 * torch.ones(B, T, D)
    capped = make_cell(cell_value_cap=0.5, forget_gate_bias=10.0)
    free = make_cell(forget_gate_bias=10.0)
    with torch.no_grad():
        for cell in (capped, free):
            cell.input_proj.weight.fill_(0.5)
        _, capped_state = capped(x, torch.zeros(B, T))
        _, free_state = free(x, torch.zeros(B, T))
    assert float(free_state.c.abs().max()) > 2.0  # the cell grows without the cap
    torch.testing.assert_close(capped_state.c, torch.full((B, H), 0.5))


@pytest.mark.parametrize(
    "overrides",
    [{}, {"gate_layer_norm": True, "cell_layer_norm": True, "projection_dim": 3}],
)
def test_gradients_reach_every_parameter(overrides: dict) -> None:
    cell = make_cell(**overrides)
    x = torch.randn(B, T, D, requires_grad=True)
    outputs, state = cell(x, torch.zeros(B, T))
    (outputs.square().sum() + state.c.sum()).backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_state_dict_round_trip() -> None:
    config = LSTMCell.Config(num_units=H, gate_layer_norm=True, projection_dim=3)
    torch.manual_seed(0)
    cell = config.build(D)
    torch.manual_seed(1)
    other = config.build(D)
    other.load_state_dict(cell.state_dict())
    x, paddings = torch.randn(B, T, D), torch.zeros(B, T)
    torch.testing.assert_close(other(x, paddings)[0], cell(x, paddings)[0], atol=0, rtol=0)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="cell_value_cap"):
        LSTMCell.Config(num_units=H, cell_value_cap=-1.0).build(D)
    with pytest.raises(ConfigError, match="num_units"):
        LSTMCell.Config(num_units=0).build(D)
