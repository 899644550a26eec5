"""Tests for seqlab.layers.attention."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.layers.attention import MultiHeadAttention
from seqlab.layers.attention_positions import (
    AttentionPositions,
    RotaryPositions,
    ShawRelativePositions,
    T5RelativeBias,
)

B, T, S, D, H = 3, 5, 6, 8, 2


def _attention(
    dropout_prob: float = 0.0, relative_positions: AttentionPositions.Config | None = None
) -> MultiHeadAttention:
    torch.manual_seed(0)
    config = MultiHeadAttention.Config(
        model_dim=D, num_heads=H, dropout_prob=dropout_prob, relative_positions=relative_positions
    )
    return config.build()


def _paddings(lengths: list[int], max_length: int) -> torch.Tensor:
    return (torch.arange(max_length)[None, :] >= torch.tensor(lengths)[:, None]).float()


def _reference(
    attention: MultiHeadAttention,
    query: torch.Tensor,
    key_value: torch.Tensor,
    key_paddings: torch.Tensor | None,
    causal: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain per-head loop implementation: (outputs [B, T, D], probs [B, H, T, S])."""
    dh = D // H
    q = query @ attention.query_proj.weight.T + attention.query_proj.bias
    kv = key_value @ attention.key_value_proj.weight.T + attention.key_value_proj.bias
    k, v = kv[..., :D], kv[..., D:]
    t, s = query.shape[1], key_value.shape[1]
    allowed = torch.ones(query.shape[0], t, s, dtype=torch.bool)
    if key_paddings is not None:
        allowed &= (key_paddings == 0)[:, None, :]
    if causal:
        allowed &= torch.ones(t, s, dtype=torch.bool).tril()
    heads, probs = [], []
    for h in range(H):
        sl = slice(h * dh, (h + 1) * dh)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh)
        scores = scores.masked_fill(~allowed, float("-inf"))
        p = torch.nan_to_num(scores.softmax(-1), nan=0.0)
        probs.append(p)
        heads.append(p @ v[..., sl])
    out = torch.cat(heads, -1) @ attention.output_proj.weight.T + attention.output_proj.bias
    return out, torch.stack(probs, 1)


def test_shapes() -> None:
    attention = _attention()
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    assert attention(query, memory, torch.zeros(B, S)).shape == (B, T, D)
    assert attention(query, query, torch.zeros(B, T), causal=True).shape == (B, T, D)
    assert attention(query, memory).shape == (B, T, D)


@pytest.mark.parametrize("causal", [False, True])
def test_matches_reference(causal: bool) -> None:
    attention = _attention()
    x = torch.randn(B, T, D)
    paddings = _paddings([5, 3, 4], T)
    expected, _ = _reference(attention, x, x, paddings, causal)
    torch.testing.assert_close(attention(x, x, paddings, causal=causal), expected)
    expected, _ = _reference(attention, x, x, None, causal)
    torch.testing.assert_close(attention(x, x, None, causal=causal), expected)


def test_cross_attention_padding_invariance() -> None:
    attention = _attention()
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    paddings = _paddings([6, 2, 4], S)
    changed = torch.where(paddings[..., None] > 0, torch.randn(B, S, D) * 100, memory)
    torch.testing.assert_close(
        attention(query, memory, paddings), attention(query, changed, paddings)
    )


@pytest.mark.parametrize(
    "relative_positions",
    [
        None,
        RotaryPositions.Config(head_dim=D // H),
        ShawRelativePositions.Config(head_dim=D // H, max_distance=2),
        T5RelativeBias.Config(num_heads=H, num_buckets=8, max_distance=6),
    ],
    ids=["absolute", "rotary", "shaw", "t5"],
)
def test_self_attention_padding_invariance(
    relative_positions: AttentionPositions.Config | None,
) -> None:
    attention = _attention(relative_positions=relative_positions)
    x = torch.randn(B, T, D)
    paddings = _paddings([5, 2, 3], T)
    changed = torch.where(paddings[..., None] > 0, torch.randn(B, T, D) * 100, x)
    real = paddings == 0
    for causal in (False, True):
        out = attention(x, x, paddings, causal=causal)
        out_changed = attention(changed, changed, paddings, causal=causal)
        torch.testing.assert_close(out[real], out_changed[real])


def test_causal_ignores_the_future() -> None:
    attention = _attention()
    x = torch.randn(B, T, D)
    changed = x.clone()
    changed[:, 3:] = torch.randn(B, T - 3, D)
    out, out_changed = attention(x, x, causal=True), attention(changed, changed, causal=True)
    torch.testing.assert_close(out[:, :3], out_changed[:, :3])


def test_fully_padded_rows_are_finite() -> None:
    attention = _attention()
    query = torch.randn(B, T, D)
    memory = torch.randn(B, S, D, requires_grad=True)
    paddings = _paddings([6, 0, 3], S)
    out = attention(query, memory, paddings)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(memory.grad).all()
    for p in attention.parameters():
        assert torch.isfinite(p.grad).all()
    key, value = attention.project_key_value(memory)
    out_probs, probs = attention.attend_with_probs(query, key, value, paddings)
    assert torch.isfinite(out_probs).all()
    assert probs[1].abs().sum() == 0
    torch.testing.assert_close(out_probs, out)


def test_project_then_attend_equals_forward() -> None:
    attention = _attention()
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    paddings = _paddings([6, 2, 4], S)
    key, value = attention.project_key_value(memory)
    assert key.shape == value.shape == (B, H, S, D // H)
    torch.testing.assert_close(
        attention.attend(query, key, value, paddings), attention(query, memory, paddings)
    )


def test_attend_with_probs_matches_reference() -> None:
    attention = _attention()
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    paddings = _paddings([6, 2, 4], S)
    out, probs = attention.attend_with_probs(query, *attention.project_key_value(memory), paddings)
    expected_out, expected_probs = _reference(attention, query, memory, paddings, False)
    assert probs.shape == (B, T, S)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(probs, expected_probs.mean(1))
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, T))
    assert probs[paddings[:, None, :].expand(B, T, S) > 0].abs().sum() == 0


def test_extend_step_equals_full_forward() -> None:
    attention = _attention().eval()
    x = torch.randn(B, T, D)
    expected = attention(x, x, causal=True)
    max_length = T + 2
    key_cache = torch.zeros(B, H, max_length, D // H)
    value_cache = torch.zeros(B, H, max_length, D // H)
    pointers = (key_cache.data_ptr(), value_cache.data_ptr())
    with torch.no_grad():
        for t in range(T):
            out = attention.extend_step(x[:, t : t + 1], key_cache, value_cache, t)
            torch.testing.assert_close(out, expected[:, t : t + 1], atol=1e-5, rtol=1e-5)
            assert key_cache[:, :, t + 1 :].abs().sum() == 0
    assert (key_cache.data_ptr(), value_cache.data_ptr()) == pointers
    full_key, full_value = attention.project_key_value(x)
    torch.testing.assert_close(key_cache[:, :, :T], full_key)
    torch.testing.assert_close(value_cache[:, :, :T], full_value)


@pytest.mark.parametrize(
    "relative_positions",
    [
        None,
        RotaryPositions.Config(head_dim=D // H),
        ShawRelativePositions.Config(head_dim=D // H, max_distance=2),
        T5RelativeBias.Config(num_heads=H, num_buckets=8, max_distance=6, bidirectional=False),
    ],
    ids=["absolute", "rotary", "shaw", "t5"],
)
def test_extend_step_beams_equals_extend_step_on_reordered_rows(
    relative_positions: AttentionPositions.Config | None,
) -> None:
    # K beams per example whose histories are shuffled (with repeats) after every step: the
    # never-reordered beam caches plus history masks give what row caches reordered by
    # index_select give.
    attention = _attention(relative_positions=relative_positions).eval()
    k, dh = 3, D // H
    first = k * torch.arange(B)
    torch.manual_seed(1)
    inputs = torch.randn(T, B * k, D)
    row_key, row_value = torch.zeros(B * k, H, T, dh), torch.zeros(B * k, H, T, dh)
    beam_key, beam_value = torch.zeros(B, H, T, k, dh), torch.zeros(B, H, T, k, dh)
    history = torch.zeros(B, k, T, dtype=torch.long)
    with torch.no_grad():
        for t in range(T):
            expected = attention.extend_step(inputs[t][:, None], row_key, row_value, t)
            history[:, :, t] = torch.arange(k)
            mask = (history[:, :, : t + 1, None] == torch.arange(k)).flatten(2)[:, None]
            out = attention.extend_step_beams(
                inputs[t].view(B, k, D), beam_key, beam_value, t, mask
            )
            torch.testing.assert_close(out.reshape(B * k, 1, D), expected, atol=1e-5, rtol=1e-5)
            parents = torch.randint(k, (B, k))
            rows = (first[:, None] + parents).view(-1)
            row_key, row_value = row_key[rows], row_value[rows]
            history = history.gather(1, parents[:, :, None].expand_as(history))


def test_gradients_reach_every_parameter() -> None:
    attention = _attention(dropout_prob=0.1)
    query = torch.randn(B, T, D, requires_grad=True)
    memory = torch.randn(B, S, D, requires_grad=True)
    attention(query, memory, _paddings([6, 2, 4], S)).square().sum().backward()
    for name, p in attention.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert query.grad.abs().sum() > 0 and memory.grad.abs().sum() > 0


def test_dropout_only_in_training() -> None:
    attention = _attention(dropout_prob=0.5)
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    attention.train()
    assert not torch.allclose(attention(query, memory), attention(query, memory))
    attention.eval()
    torch.testing.assert_close(attention(query, memory), attention(query, memory))


def test_state_dict_round_trip() -> None:
    attention = _attention()
    other = MultiHeadAttention.Config(model_dim=D, num_heads=H).build()
    other.load_state_dict(attention.state_dict())
    query, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    torch.testing.assert_close(other(query, memory), attention(query, memory))


def test_heads_must_divide_model_dim() -> None:
    with pytest.raises(ConfigError, match="num_heads"):
        MultiHeadAttention.Config(model_dim=10, num_heads=3).build()
