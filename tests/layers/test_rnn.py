"""LSTM stacks: shapes, padding, bidirectional correctness, incremental decoding, residuals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlab.core.config import ConfigError
from seqlab.layers.lstm_cell import LSTMCell
from seqlab.layers.rnn import BidirectionalLSTMStack, LSTMStack

B, T, D, H = 3, 7, 8, 4


def paddings_for(lengths: list[int], length: int = T) -> torch.Tensor:
    return (torch.arange(length)[None, :] >= torch.tensor(lengths)[:, None]).float()


def cell_config(**overrides: object) -> LSTMCell.Config:
    fields: dict = {"num_units": H, "gate_layer_norm": True, "cell_value_cap": 10.0}
    return LSTMCell.Config(**{**fields, **overrides})


def bidi_stack(num_layers: int = 3, dropout_prob: float = 0.0) -> BidirectionalLSTMStack:
    torch.manual_seed(0)
    return BidirectionalLSTMStack.Config(
        input_dim=D,
        num_layers=num_layers,
        cell=cell_config(),
        dropout_prob=dropout_prob,
        residual_start_layer=1,
    ).build()


def uni_stack(side_input_dim: int = 0, dropout_prob: float = 0.0) -> LSTMStack:
    torch.manual_seed(0)
    return LSTMStack.Config(
        input_dim=D,
        side_input_dim=side_input_dim,
        num_layers=3,
        cell=cell_config(projection_dim=D),
        dropout_prob=dropout_prob,
        residual_start_layer=0,
    ).build()


def test_shapes_and_zero_outputs_at_padded_steps() -> None:
    paddings = paddings_for([7, 4, 1])
    bidi = bidi_stack()(torch.randn(B, T, D), paddings)
    uni = uni_stack()(torch.randn(B, T, D), paddings)
    assert bidi.shape == (B, T, 2 * H) and uni.shape == (B, T, D)
    for outputs in (bidi, uni):
        assert torch.all(outputs[paddings > 0] == 0)
        assert torch.all(outputs[paddings == 0].abs().sum(-1) > 0)


@pytest.mark.parametrize("make", [bidi_stack, uni_stack])
def test_changing_padded_positions_changes_nothing_real(make) -> None:
    stack = make()
    paddings = paddings_for([7, 4, 2])
    x = torch.randn(B, T, D)
    noisy = torch.where(paddings[..., None] > 0, 100 * torch.randn(B, T, D), x)
    torch.testing.assert_close(stack(noisy, paddings), stack(x, paddings), atol=0, rtol=0)


def test_bidirectional_padded_batch_equals_each_sequence_alone() -> None:
    stack = bidi_stack()
    lengths = [7, 4, 1]
    x = torch.randn(B, T, D)
    batched = stack(x, paddings_for(lengths))
    for b, length in enumerate(lengths):
        alone = stack(x[b : b + 1, :length], torch.zeros(1, length))
        torch.testing.assert_close(batched[b, :length], alone[0])


def test_bidirectional_handles_left_padding() -> None:
    stack = bidi_stack()
    x = torch.randn(1, 4, D)
    shifted = torch.cat([torch.randn(1, 3, D), x], dim=1)
    left_padded = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(stack(shifted, left_padded)[:, 3:], stack(x, torch.zeros(1, 4)))


def test_one_plain_bidirectional_layer_equals_torch_lstm() -> None:
    torch.manual_seed(0)
    stack = BidirectionalLSTMStack.Config(
        input_dim=D, num_layers=1, cell=LSTMCell.Config(num_units=H), residual_start_layer=1
    ).build()
    reference = nn.LSTM(D, H, batch_first=True, bidirectional=True)

    def torch_order(w: torch.Tensor) -> torch.Tensor:
        i, f, o, g = w.chunk(4, dim=0)
        return torch.cat([i, f, g, o], dim=0)

    with torch.no_grad():
        for suffix, cell in (("", stack.forward_cells[0]), ("_reverse", stack.backward_cells[0])):
            getattr(reference, f"weight_ih_l0{suffix}").copy_(torch_order(cell.input_proj.weight))
            getattr(reference, f"weight_hh_l0{suffix}").copy_(
                torch_order(cell.recurrent_proj.weight)
            )
            getattr(reference, f"bias_ih_l0{suffix}").copy_(torch_order(cell.bias))
            getattr(reference, f"bias_hh_l0{suffix}").zero_()
    lengths = [7, 4, 1]
    x = torch.randn(B, T, D)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
    expected, _ = nn.utils.rnn.pad_packed_sequence(reference(packed)[0], batch_first=True)
    torch.testing.assert_close(stack(x, paddings_for(lengths)), expected)


@pytest.mark.parametrize("side_input_dim", [0, 5])
def test_extend_step_equals_forward(side_input_dim: int) -> None:
    stack = uni_stack(side_input_dim)
    paddings = paddings_for([7, 4, 2])
    x = torch.randn(B, T, D)
    side = torch.randn(B, T, side_input_dim) if side_input_dim else None
    full = stack(x, paddings, side)
    state = stack.init_state(B)
    for t in range(T):
        out, state = stack.extend_step(
            x[:, t], paddings[:, t], state, None if side is None else side[:, t]
        )
        torch.testing.assert_close(out, full[:, t])


def test_side_input_must_match_the_config() -> None:
    with pytest.raises(ValueError, match="side_input_dim=5 got no side input"):
        uni_stack(5)(torch.randn(B, T, D), torch.zeros(B, T))


def test_residual_connections_start_at_the_configured_layer() -> None:
    stack = bidi_stack(num_layers=2)
    x, paddings = torch.randn(B, T, D), torch.zeros(B, T)
    first = (
        stack.forward_cells[0](x, paddings)[0],
        stack.backward_cells[0](x, paddings, reverse=True)[0],
    )
    layer0 = torch.cat(first, dim=-1)
    second = (
        stack.forward_cells[1](layer0, paddings)[0],
        stack.backward_cells[1](layer0, paddings, reverse=True)[0],
    )
    torch.testing.assert_close(stack(x, paddings), torch.cat(second, dim=-1) + layer0)


def test_residual_width_mismatch_is_an_error() -> None:
    config = BidirectionalLSTMStack.Config(
        input_dim=D, num_layers=2, cell=cell_config(num_units=3), residual_start_layer=0
    )
    with pytest.raises(ConfigError, match="layer 0 has a residual.*input width 8 .*output width 6"):
        config.build()
    config.residual_start_layer = 1  # layer 1: 6 -> 6
    assert config.build().output_dim == 6


@pytest.mark.parametrize("make", [bidi_stack, uni_stack])
def test_gradients_reach_every_parameter(make) -> None:
    stack = make(dropout_prob=0.1)
    stack.train()
    x = torch.randn(B, T, D, requires_grad=True)
    stack(x, paddings_for([7, 4, 2])).square().sum().backward()
    for name, p in stack.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None


@pytest.mark.parametrize("make", [bidi_stack, uni_stack])
def test_state_dict_round_trip(make) -> None:
    stack = make()
    torch.manual_seed(1)
    other = type(stack)(stack.config.copy())
    other.load_state_dict(stack.state_dict())
    x, paddings = torch.randn(B, T, D), paddings_for([7, 4, 2])
    torch.testing.assert_close(other(x, paddings), stack(x, paddings), atol=0, rtol=0)


def test_dropout_is_active_in_training_only() -> None:
    stack = bidi_stack(dropout_prob=0.5)
    x, paddings = torch.randn(B, T, D), torch.zeros(B, T)
    stack.eval()
    torch.testing.assert_close(stack(x, paddings), stack(x, paddings), atol=0, rtol=0)
    stack.train()
    assert not torch.equal(stack(x, paddings), stack(x, paddings))
