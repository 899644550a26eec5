"""Tests for seqlab.layers.transformer."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.layers.attention import MultiHeadAttention
from seqlab.layers.attention_positions import (
    AttentionPositions,
    RotaryPositions,
    ShawRelativePositions,
    T5RelativeBias,
)
from seqlab.layers.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    decoder_config,
    encoder_config,
)

B, S, T, D, H = 3, 6, 5, 8, 2

# Positions inside self-attention; head sizes are filled in by encoder_config/decoder_config.
RELATIVE_POSITIONS: dict[str, AttentionPositions.Config | None] = {
    "absolute": None,
    "rotary": RotaryPositions.Config(),
    "shaw": ShawRelativePositions.Config(max_distance=2),
    "t5": T5RelativeBias.Config(num_buckets=8, max_distance=6),
}


def _paddings(lengths: list[int], max_length: int) -> torch.Tensor:
    return (torch.arange(max_length)[None, :] >= torch.tensor(lengths)[:, None]).float()


def _encoder(
    norm_first: bool = True, dropout_prob: float = 0.0, variant: str = "absolute"
) -> TransformerEncoder:
    torch.manual_seed(0)
    config = encoder_config(
        num_layers=2,
        model_dim=D,
        num_heads=H,
        hidden_dim=16,
        dropout_prob=dropout_prob,
        norm_first=norm_first,
        relative_positions=RELATIVE_POSITIONS[variant],
    )
    return config.build()


def _decoder(
    norm_first: bool = True, dropout_prob: float = 0.0, variant: str = "absolute"
) -> TransformerDecoder:
    torch.manual_seed(0)
    config = decoder_config(
        num_layers=2,
        model_dim=D,
        num_heads=H,
        hidden_dim=16,
        dropout_prob=dropout_prob,
        attention_dropout_prob=dropout_prob,
        ffn_dropout_prob=dropout_prob,
        norm_first=norm_first,
        relative_positions=RELATIVE_POSITIONS[variant],
    )
    return config.build()


def _decoder_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    targets = torch.randn(B, T, D)
    target_paddings = _paddings([5, 3, 4], T)
    encoder_outputs = torch.randn(B, S, D)
    encoder_paddings = _paddings([6, 2, 4], S)
    return targets, target_paddings, encoder_outputs, encoder_paddings


def _replace_padded(x: torch.Tensor, paddings: torch.Tensor) -> torch.Tensor:
    return torch.where(paddings[..., None] > 0, torch.randn_like(x) * 100, x)


# ---- encoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_shapes_and_padding_invariance(norm_first: bool, variant: str) -> None:
    encoder = _encoder(norm_first, variant=variant)
    inputs, paddings = torch.randn(B, S, D), _paddings([6, 2, 4], S)
    out = encoder(inputs, paddings)
    assert out.shape == (B, S, D)
    assert out[paddings > 0].abs().sum() == 0
    torch.testing.assert_close(encoder(_replace_padded(inputs, paddings), paddings), out)


def test_encoder_final_norm_only_for_pre_ln() -> None:
    assert isinstance(_encoder(True).final_norm, torch.nn.LayerNorm)
    assert _encoder(False).final_norm is None


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
def test_encoder_gradients_reach_every_parameter(variant: str) -> None:
    encoder = _encoder(dropout_prob=0.1, variant=variant)
    inputs = torch.randn(B, S, D, requires_grad=True)
    encoder(inputs, _paddings([6, 2, 4], S)).square().sum().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert inputs.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
def test_encoder_state_dict_round_trip(variant: str) -> None:
    encoder = _encoder(variant=variant)
    other = encoder.config.build()
    other.load_state_dict(encoder.state_dict())
    inputs, paddings = torch.randn(B, S, D), _paddings([6, 2, 4], S)
    torch.testing.assert_close(other(inputs, paddings), encoder(inputs, paddings))


def test_encoder_layer_single_layer_pre_ln_math() -> None:
    torch.manual_seed(0)
    layer = encoder_config(num_layers=1, model_dim=D, num_heads=H, hidden_dim=16).layer.build()
    layer.eval()
    x, paddings = torch.randn(B, S, D), _paddings([6, 2, 4], S)
    h = layer.self_attention_norm(x)
    x1 = x + layer.self_attention(h, h, paddings)
    expected = x1 + layer.ffn(layer.ffn_norm(x1))
    torch.testing.assert_close(layer(x, paddings), expected)


def test_encoder_layer_single_layer_post_ln_math() -> None:
    # Vaswani et al.: x = norm(x + sublayer(x)) after each block, no final norm.
    torch.manual_seed(0)
    config = encoder_config(num_layers=1, model_dim=D, num_heads=H, hidden_dim=16, norm_first=False)
    assert config.final_norm is False
    encoder = config.build().eval()
    layer = encoder.layers[0]
    x, paddings = torch.randn(B, S, D), _paddings([6, 2, 4], S)
    x1 = layer.self_attention_norm(x + layer.self_attention(x, x, paddings))
    expected = layer.ffn_norm(x1 + layer.ffn(x1))
    torch.testing.assert_close(layer(x, paddings), expected)
    torch.testing.assert_close(encoder(x, paddings), expected * (paddings[..., None] == 0))


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("final_norm", [None, True, False])
def test_final_norm_option(norm_first: bool, final_norm: bool | None) -> None:
    expected = norm_first if final_norm is None else final_norm
    encoder = encoder_config(
        num_layers=1, model_dim=D, num_heads=H, hidden_dim=16, norm_first=norm_first
    )
    decoder = decoder_config(
        num_layers=1, model_dim=D, num_heads=H, hidden_dim=16, norm_first=norm_first
    )
    assert encoder.final_norm is decoder.final_norm is norm_first  # written out by the helpers
    for config in (encoder, decoder):
        config.final_norm = final_norm
        stack = config.build()
        assert isinstance(stack.final_norm, torch.nn.LayerNorm) == expected
    torch.manual_seed(0)
    encoder.final_norm = True
    stack = encoder.build().eval()
    x, paddings = torch.randn(B, S, D), _paddings([6, 2, 4], S)
    expected_out = stack.final_norm(stack.layers[0](x, paddings)) * (paddings[..., None] == 0)
    torch.testing.assert_close(stack(x, paddings), expected_out)


def test_decoder_config_relative_positions() -> None:
    config = decoder_config(
        num_layers=1,
        model_dim=D,
        num_heads=H,
        hidden_dim=16,
        relative_positions=T5RelativeBias.Config(num_buckets=8, max_distance=6),
    )
    positions = config.layer.self_attention.relative_positions
    assert isinstance(positions, T5RelativeBias.Config)
    assert positions.num_heads == H and positions.bidirectional is False
    assert config.layer.cross_attention.relative_positions is None
    encoder = encoder_config(
        num_layers=1,
        model_dim=D,
        num_heads=H,
        hidden_dim=16,
        relative_positions=ShawRelativePositions.Config(),
    )
    assert encoder.layer.self_attention.relative_positions.head_dim == D // H
    config.layer.cross_attention.relative_positions = RotaryPositions.Config(head_dim=D // H)
    with pytest.raises(ConfigError, match=r"cross_attention\.relative_positions"):
        TransformerDecoderLayer(config.layer)


@pytest.mark.parametrize("where", ["residual", "attention", "ffn"])
def test_each_dropout_acts_only_where_its_field_says(where: str) -> None:
    # Residual, attention-probability and feed-forward dropout are separate config fields.
    config = encoder_config(num_layers=1, model_dim=D, num_heads=H, hidden_dim=16, dropout_prob=0)
    layer_config = config.layer
    if where == "residual":
        layer_config.residual_dropout_prob = 0.5
    elif where == "attention":
        layer_config.self_attention.dropout_prob = 0.5
    else:
        layer_config.ffn.dropout_prob = 0.5
    torch.manual_seed(0)
    encoder = config.build().train()
    layer = encoder.layers[0]
    seen: dict[str, list[torch.Tensor]] = {"attention": [], "ffn_in": [], "ffn_out": []}

    def record_ffn(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["ffn_in"].append(inputs[0])
        seen["ffn_out"].append(output)

    layer.self_attention.register_forward_hook(lambda m, i, o: seen["attention"].append(o))
    layer.ffn.register_forward_hook(record_ffn)
    x, paddings = torch.randn(B, S, D), _paddings([6, 2, 4], S)
    out = [encoder(x, paddings) for _ in range(2)]
    assert not torch.equal(*out)
    varies = {name: not torch.equal(*tensors) for name, tensors in seen.items()}
    assert (
        varies
        == {
            "residual": {"attention": False, "ffn_in": True, "ffn_out": True},
            "attention": {"attention": True, "ffn_in": True, "ffn_out": True},
            "ffn": {"attention": False, "ffn_in": False, "ffn_out": True},
        }[where]
    )
    encoder.eval()
    torch.testing.assert_close(encoder(x, paddings), encoder(x, paddings))


def test_mismatched_child_dims_are_an_error() -> None:
    config = encoder_config(num_layers=1, model_dim=D, num_heads=H, hidden_dim=16).layer
    config.self_attention.model_dim = 2 * D
    with pytest.raises(ConfigError, match=r"self_attention\.model_dim"):
        config.build()


def test_built_config_is_the_printed_config() -> None:
    config = decoder_config(num_layers=2, model_dim=D, num_heads=H, hidden_dim=16)
    text = config.to_text()
    decoder = config.build()
    assert decoder.config.to_text() == text
    assert decoder.layers[0].config.to_text() == config.layer.to_text()


def test_default_configs_build_consistently() -> None:
    layer_config = TransformerEncoderLayer.Config()
    assert layer_config.self_attention == MultiHeadAttention.Config()
    assert layer_config.ffn.model_dim == layer_config.model_dim


# ---- decoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_shapes_and_padding_invariance(norm_first: bool, variant: str) -> None:
    decoder = _decoder(norm_first, variant=variant)
    targets, target_paddings, encoder_outputs, encoder_paddings = _decoder_inputs()
    out = decoder(targets, target_paddings, encoder_outputs, encoder_paddings)
    assert out.shape == (B, T, D)
    assert out[target_paddings > 0].abs().sum() == 0
    changed = decoder(
        _replace_padded(targets, target_paddings),
        target_paddings,
        _replace_padded(encoder_outputs, encoder_paddings),
        encoder_paddings,
    )
    torch.testing.assert_close(changed, out)


def test_decoder_is_causal() -> None:
    decoder = _decoder()
    targets, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    no_paddings = torch.zeros(B, T)
    changed = targets.clone()
    changed[:, 3:] = torch.randn(B, T - 3, D)
    out = decoder(targets, no_paddings, encoder_outputs, encoder_paddings)
    out_changed = decoder(changed, no_paddings, encoder_outputs, encoder_paddings)
    torch.testing.assert_close(out[:, :3], out_changed[:, :3])


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("return_attention", [False, True])
def test_extend_step_equals_forward(norm_first: bool, return_attention: bool, variant: str) -> None:
    decoder = _decoder(norm_first, dropout_prob=0.1, variant=variant).eval()
    targets, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    with torch.no_grad():
        expected = decoder(targets, torch.zeros(B, T), encoder_outputs, encoder_paddings)
        state = decoder.init_state(encoder_outputs, encoder_paddings, max_length=T + 1)
        pointers = (state.self_key.data_ptr(), state.self_value.data_ptr())
        for t in range(T):
            assert state.step == t
            out, state, probs = decoder.extend_step(
                state, targets[:, t : t + 1], return_attention=return_attention
            )
            assert out.shape == (B, 1, D)
            torch.testing.assert_close(out, expected[:, t : t + 1], atol=1e-5, rtol=1e-5)
            if return_attention:
                assert probs.shape == (B, S)
                torch.testing.assert_close(probs.sum(-1), torch.ones(B))
                assert probs[encoder_paddings > 0].abs().sum() == 0
            else:
                assert probs is None
    assert state.step == T
    assert (state.self_key.data_ptr(), state.self_value.data_ptr()) == pointers
    assert state.self_key[:, :, :, T:].abs().sum() == 0


def test_state_layout_is_batch_major() -> None:
    decoder = _decoder()
    _, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    state = decoder.init_state(encoder_outputs, encoder_paddings, max_length=7)
    assert isinstance(state, NestedMap)
    assert state.self_key.shape == (B, 2, H, 7, D // H)
    assert state.cross_key.shape == (B, 2, H, S, D // H)
    for key, value in state.flatten():
        if isinstance(value, torch.Tensor):
            assert value.shape[0] == B, key


def test_extend_step_attention_probs_match_full_forward() -> None:
    decoder = _decoder().eval()
    targets, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    cross_attention = decoder.layers[-1].cross_attention
    recorded: list[torch.Tensor] = []

    def recording_forward(
        query: torch.Tensor,
        key_value: torch.Tensor,
        key_paddings: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        key, value = cross_attention.project_key_value(key_value)
        out, probs = cross_attention.attend_with_probs(query, key, value, key_paddings)
        recorded.append(probs)
        return out

    with torch.no_grad():
        state = decoder.init_state(encoder_outputs, encoder_paddings, max_length=T)
        step_probs = []
        for t in range(T):
            _, state, probs = decoder.extend_step(
                state, targets[:, t : t + 1], return_attention=True
            )
            step_probs.append(probs)
        cross_attention.forward = recording_forward
        decoder(targets, torch.zeros(B, T), encoder_outputs, encoder_paddings)
    torch.testing.assert_close(torch.stack(step_probs, 1), recorded[0], atol=1e-5, rtol=1e-5)


def test_extend_step_past_max_length_is_an_error() -> None:
    decoder = _decoder().eval()
    _, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    state = decoder.init_state(encoder_outputs, encoder_paddings, max_length=1)
    with torch.no_grad():
        _, state, _ = decoder.extend_step(state, torch.randn(B, 1, D))
        with pytest.raises(ValueError, match="max_length"):
            decoder.extend_step(state, torch.randn(B, 1, D))


@pytest.mark.parametrize(
    "indices",
    [[2, 0, 1], [0, 0, 1, 1, 2, 2], [1, 1]],
    ids=["permute", "expand", "shrink"],
)
def test_reorder_state(indices: list[int]) -> None:
    decoder = _decoder().eval()
    targets, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    index = torch.tensor(indices)
    split = 2
    with torch.no_grad():
        expected = decoder(
            targets[index],
            torch.zeros(len(indices), T),
            encoder_outputs[index],
            encoder_paddings[index],
        )
        state = decoder.init_state(encoder_outputs, encoder_paddings, max_length=T)
        for t in range(split):
            _, state, _ = decoder.extend_step(state, targets[:, t : t + 1])
        state = decoder.reorder_state(state, index)
        assert state.step == split
        assert state.self_key.shape[0] == len(indices)
        for t in range(split, T):
            out, state, _ = decoder.extend_step(state, targets[index, t : t + 1])
            torch.testing.assert_close(out, expected[:, t : t + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
@pytest.mark.parametrize("return_attention", [False, True])
def test_expand_state_keeps_cross_state_per_example(return_attention: bool, variant: str) -> None:
    # As in beam search: K rows per example, shuffled (with repeats) within their example
    # after every step. Each row must decode as the full forward of its own inputs and equal
    # the generic path that gathers the whole state per row, cross-attention state included.
    decoder = _decoder(variant=variant).eval()
    targets, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    k = 3
    examples = torch.arange(B).repeat_interleave(k)  # [B * K] example of each row
    torch.manual_seed(2)
    inputs = torch.randn(B * k, T, D)
    inputs[:, 0] = targets[examples, 0]  # the first step runs before the expansion
    with torch.no_grad():
        state = decoder.init_state(encoder_outputs, encoder_paddings, max_length=T)
        reference = decoder.init_state(encoder_outputs, encoder_paddings, max_length=T)
        _, state, _ = decoder.extend_step(state, targets[:, :1])
        _, reference, _ = decoder.extend_step(reference, targets[:, :1])
        state = decoder.expand_state(state, k)
        reference = decoder.reorder_state(reference, examples)
        # Beam caches: a slot per beam, [B, L, H, M, K, Dh]; the generic path has B * K rows.
        assert state.self_key.shape[:5] == (B, 2, H, T, k)
        assert reference.cross_key.shape[0] == B * k
        assert state.cross_key.shape[0] == B and state.encoder_paddings.shape == (B, S)
        cross_pointer = state.cross_key.data_ptr()
        for t in range(1, T):
            step_inputs = inputs[:, t : t + 1]
            out, state, probs = decoder.extend_step(state, step_inputs, return_attention)
            ref_out, reference, ref_probs = decoder.extend_step(
                reference, step_inputs, return_attention
            )
            expected = decoder(
                inputs[:, : t + 1],
                torch.zeros(B * k, t + 1),
                encoder_outputs[examples],
                encoder_paddings[examples],
            )
            torch.testing.assert_close(out, expected[:, t : t + 1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-6)
            if return_attention:
                torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=1e-6)
            indices = examples * k + torch.randint(k, (B * k,))
            state = decoder.reorder_state(state, indices)
            reference = decoder.reorder_state(reference, indices)
            inputs = inputs[indices]
        assert state.cross_key.data_ptr() == cross_pointer
        with pytest.raises(ValueError, match="one index per row"):
            decoder.reorder_state(state, torch.arange(B))


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
def test_decoder_gradients_reach_every_parameter(variant: str) -> None:
    decoder = _decoder(dropout_prob=0.1, variant=variant)
    targets, target_paddings, encoder_outputs, encoder_paddings = _decoder_inputs()
    targets.requires_grad_(True)
    encoder_outputs.requires_grad_(True)
    decoder(targets, target_paddings, encoder_outputs, encoder_paddings).square().sum().backward()
    for name, p in decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert targets.grad.abs().sum() > 0 and encoder_outputs.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", list(RELATIVE_POSITIONS))
def test_decoder_state_dict_round_trip(variant: str) -> None:
    decoder = _decoder(variant=variant)
    other = decoder.config.build()
    other.load_state_dict(decoder.state_dict())
    inputs = _decoder_inputs()
    torch.testing.assert_close(other(*inputs), decoder(*inputs))


def test_beam_reorders_move_no_cache() -> None:
    # After expand_state, beam steps reorder only the [B, K, M] histories: every step writes
    # into the same beam caches, and each beam still decodes as the full forward of its own
    # inputs. Without expansion, an in-place reorder gathers into a spare cache and swaps.
    decoder = _decoder().eval()
    _, _, encoder_outputs, encoder_paddings = _decoder_inputs()
    k = 2
    torch.manual_seed(3)
    inputs = torch.randn(B * k, T, D)
    examples = torch.arange(B).repeat_interleave(k)
    with torch.no_grad():
        state = decoder.expand_state(
            decoder.init_state(encoder_outputs, encoder_paddings, max_length=T), k
        )
        pointers = (state.self_key.data_ptr(), state.self_value.data_ptr())
        origin = torch.arange(B * k)  # row of `inputs` whose tokens each beam has consumed
        for t in range(T):
            out, state, _ = decoder.extend_step(state, inputs[origin, t : t + 1])
            expected = decoder(
                inputs[origin, : t + 1],
                torch.zeros(B * k, t + 1),
                encoder_outputs[examples],
                encoder_paddings[examples],
            )[:, t : t + 1]
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
            indices = examples * k + torch.randint(k, (B * k,))
            state = decoder.reorder_state(state, indices)
            origin = origin[indices]
            assert (state.self_key.data_ptr(), state.self_value.data_ptr()) == pointers

        state = decoder.init_state(encoder_outputs, encoder_paddings, max_length=T)
        buffers: set[int] = set()
        for t in range(T):
            _, state, _ = decoder.extend_step(state, inputs[:B, t : t + 1])
            state = decoder.reorder_state(state, torch.arange(B).flip(0))
            if t >= 1:
                buffers |= {state.self_key.data_ptr(), state.self_key_spare.data_ptr()}
        assert len(buffers) == 2
