"""Tests for seqlab.layers.attention_positions and their use in MultiHeadAttention."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.core.config import Config, ConfigError
from seqlab.layers.attention import MultiHeadAttention
from seqlab.layers.attention_positions import (
    AttentionPositions,
    RotaryPositions,
    ShawRelativePositions,
    T5RelativeBias,
)

B, T, D, H = 3, 7, 8, 2
DH = D // H

VARIANTS: dict[str, AttentionPositions.Config] = {
    "rotary": RotaryPositions.Config(head_dim=DH, max_timescale=100.0),
    "shaw": ShawRelativePositions.Config(head_dim=DH, max_distance=2),
    "shaw_keys_only": ShawRelativePositions.Config(
        head_dim=DH, max_distance=2, value_embeddings=False
    ),
    "t5": T5RelativeBias.Config(num_heads=H, num_buckets=8, max_distance=6),
    "t5_unidirectional": T5RelativeBias.Config(
        num_heads=H, num_buckets=8, max_distance=6, bidirectional=False
    ),
}


def _attention(variant: str, dropout_prob: float = 0.0) -> MultiHeadAttention:
    torch.manual_seed(0)
    config = MultiHeadAttention.Config(
        model_dim=D,
        num_heads=H,
        dropout_prob=dropout_prob,
        relative_positions=VARIANTS[variant].copy(),
    )
    attention = config.build()
    # Non-trivial T5 biases, so that a wrong bucket shows in the outputs.
    if isinstance(attention.relative_positions, T5RelativeBias):
        with torch.no_grad():
            attention.relative_positions.bias.normal_()
    return attention


def _paddings(lengths: list[int], max_length: int) -> torch.Tensor:
    return (torch.arange(max_length)[None, :] >= torch.tensor(lengths)[:, None]).float()


def _t5_bucket(offset: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """Scalar port of T5's ``_relative_position_bucket`` (offset = key - query position)."""
    bucket, n = 0, -offset
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    far = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    )
    return bucket + min(far, num_buckets - 1)


def _rotate_reference(x: torch.Tensor, position: int, max_timescale: float) -> torch.Tensor:
    """[..., Dh] rotated as complex numbers x_i + i x_{i + Dh/2} times exp(i p w_i)."""
    half = x.shape[-1] // 2
    w = max_timescale ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    z = torch.complex(x[..., :half].double(), x[..., half:].double()) * torch.exp(1j * position * w)
    return torch.cat([z.real, z.imag], dim=-1).float()


def _reference(
    attention: MultiHeadAttention, x: torch.Tensor, paddings: torch.Tensor, causal: bool
) -> torch.Tensor:
    """Per-head, per-position loops straight from the papers' formulas: [B, T, D]."""
    scheme = attention.relative_positions
    q = x @ attention.query_proj.weight.T + attention.query_proj.bias
    kv = x @ attention.key_value_proj.weight.T + attention.key_value_proj.bias
    k, v = kv[..., :D], kv[..., D:]
    t = x.shape[1]
    heads = []
    for h in range(H):
        sl = slice(h * DH, (h + 1) * DH)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
        if isinstance(scheme, RotaryPositions):
            timescale = scheme.config.max_timescale
            qh = torch.stack([_rotate_reference(qh[:, i], i, timescale) for i in range(t)], 1)
            kh = torch.stack([_rotate_reference(kh[:, i], i, timescale) for i in range(t)], 1)
        scores = qh @ kh.transpose(1, 2) / math.sqrt(DH)
        value_terms = torch.zeros(x.shape[0], t, t, DH)
        for i in range(t):
            for j in range(t):
                if isinstance(scheme, ShawRelativePositions):
                    r = max(-2, min(2, j - i)) + 2
                    scores[:, i, j] += qh[:, i] @ scheme.key_embeddings[r] / math.sqrt(DH)
                    if scheme.value_embeddings is not None:
                        value_terms[:, i, j] = scheme.value_embeddings[r]
                if isinstance(scheme, T5RelativeBias):
                    c = scheme.config
                    bucket = _t5_bucket(j - i, c.bidirectional, c.num_buckets, c.max_distance)
                    scores[:, i, j] += scheme.bias[bucket, h]
        allowed = (paddings == 0)[:, None, :].expand(-1, t, -1)
        if causal:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()
        probs = torch.nan_to_num(scores.masked_fill(~allowed, -math.inf).softmax(-1), nan=0.0)
        heads.append(probs @ vh + torch.einsum("bij,bijd->bid", probs, value_terms))
    return torch.cat(heads, -1) @ attention.output_proj.weight.T + attention.output_proj.bias


# ---- the schemes on their own ---------------------------------------------------------------


def test_t5_buckets_match_t5() -> None:
    positions = torch.arange(-150, 151)
    for bidirectional in (True, False):
        config = T5RelativeBias.Config(
            num_heads=2, num_buckets=32, max_distance=128, bidirectional=bidirectional
        )
        buckets = config.build().buckets(torch.zeros(1, dtype=torch.long), positions)[0]
        expected = [_t5_bucket(int(p), bidirectional, 32, 128) for p in positions]
        assert buckets.tolist() == expected
        assert 0 <= buckets.min() and buckets.max() < 32


def test_rotary_dot_products_depend_only_on_offsets() -> None:
    rotary = RotaryPositions.Config(head_dim=DH).build()
    q, k = torch.randn(1, 1, 1, DH), torch.randn(1, 1, 1, DH)

    def score(query_position: int, key_position: int) -> torch.Tensor:
        rotated_q = rotary.rotate(q, torch.tensor([query_position]))
        rotated_k = rotary.rotate(k, torch.tensor([key_position]))
        return (rotated_q * rotated_k).sum()

    torch.testing.assert_close(score(3, 5), score(10, 12))
    torch.testing.assert_close(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(3, 5), score(3, 6))
    rotated = rotary.rotate(q.expand(1, 1, 4, DH), torch.arange(4))
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 4))


def test_shaw_offsets_are_clipped() -> None:
    shaw = ShawRelativePositions.Config(head_dim=DH, max_distance=2).build()
    ids = shaw.offset_ids(torch.arange(4), torch.arange(4))
    assert ids.tolist() == [[2, 3, 4, 4], [1, 2, 3, 4], [0, 1, 2, 3], [0, 0, 1, 2]]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (RotaryPositions.Config(head_dim=5), "even"),
        (ShawRelativePositions.Config(max_distance=0), "max_distance"),
        (T5RelativeBias.Config(num_buckets=2), "num_buckets"),
        (T5RelativeBias.Config(num_buckets=32, max_distance=8), "max_distance"),
    ],
)
def test_bad_scheme_configs_are_errors(config: AttentionPositions.Config, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config.build()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (RotaryPositions.Config(head_dim=2 * DH), r"RotaryPositions\.head_dim is 8"),
        (ShawRelativePositions.Config(head_dim=DH + 2), r"ShawRelativePositions\.head_dim"),
        (T5RelativeBias.Config(num_heads=H + 1), r"T5RelativeBias\.num_heads is 3"),
    ],
)
def test_scheme_must_fit_the_heads(config: AttentionPositions.Config, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MultiHeadAttention.Config(model_dim=D, num_heads=H, relative_positions=config).build()


def test_config_prints_sets_and_round_trips() -> None:
    config = MultiHeadAttention.Config(model_dim=D, num_heads=H)
    assert "relative_positions = None" in config.to_text()
    config.relative_positions = VARIANTS["shaw"].copy()
    assert "relative_positions.cls = 'ShawRelativePositions'" in config.to_text()
    config.set("relative_positions.max_distance", "3")
    assert config.relative_positions.max_distance == 3
    assert Config.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="config section"):
        config.set("relative_positions", "None")
    plain = MultiHeadAttention.Config(model_dim=D, num_heads=H)
    plain.set("relative_positions", "None")
    assert plain.relative_positions is None


# ---- MultiHeadAttention with each scheme ------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_reference(variant: str, causal: bool) -> None:
    attention = _attention(variant)
    x = torch.randn(B, T, D)
    paddings = _paddings([7, 4, 6], T)
    out = attention(x, x, paddings, causal=causal)
    assert out.shape == (B, T, D)
    real = paddings == 0
    expected = _reference(attention, x, paddings, causal)
    torch.testing.assert_close(out[real], expected[real], atol=1e-5, rtol=1e-4)
    out = attention(x, x, None, causal=causal)
    expected = _reference(attention, x, torch.zeros(B, T), causal)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padded_example_equals_it_alone(variant: str) -> None:
    # Padding invariance proper (changing padded frames) is in test_attention.py.
    attention = _attention(variant)
    x = torch.randn(B, T, D)
    paddings = _paddings([7, 2, 5], T)
    for causal in (False, True):
        out = attention(x, x, paddings, causal=causal)
        alone = attention(x[1:2, :2], x[1:2, :2], paddings[1:2, :2], causal=causal)
        torch.testing.assert_close(alone[0], out[1, :2], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_extend_step_equals_full_forward(variant: str) -> None:
    attention = _attention(variant, dropout_prob=0.3).eval()
    x = torch.randn(B, T, D)
    expected = attention(x, x, causal=True)
    key_cache = torch.zeros(B, H, T + 2, DH)
    value_cache = torch.zeros(B, H, T + 2, DH)
    with torch.no_grad():
        for t in range(T):
            out = attention.extend_step(x[:, t : t + 1], key_cache, value_cache, t)
            torch.testing.assert_close(out, expected[:, t : t + 1], atol=1e-5, rtol=1e-5)
    assert key_cache[:, :, T:].abs().sum() == 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_reach_every_parameter(variant: str) -> None:
    attention = _attention(variant, dropout_prob=0.1)
    x = torch.randn(B, T, D, requires_grad=True)
    attention(x, x, _paddings([7, 2, 5], T), causal=True).square().sum().backward()
    names = [name for name, _ in attention.named_parameters()]
    assert any(name.startswith("relative_positions.") for name in names) == (variant != "rotary")
    for name, p in attention.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_round_trip(variant: str) -> None:
    attention = _attention(variant)
    torch.manual_seed(5)
    other = attention.config.build()
    other.load_state_dict(attention.state_dict())
    x = torch.randn(B, T, D)
    torch.testing.assert_close(other(x, x, causal=True), attention(x, x, causal=True))


@pytest.mark.parametrize("variant", ["shaw", "t5"])
def test_fully_padded_rows_are_finite(variant: str) -> None:
    attention = _attention(variant)
    x = torch.randn(B, T, D, requires_grad=True)
    out = attention(x, x, _paddings([7, 0, 3], T))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("variant", ["rotary", "shaw"])
def test_attention_dropout_only_in_training(variant: str) -> None:
    attention = _attention(variant, dropout_prob=0.5)
    x = torch.randn(B, T, D)
    attention.train()
    assert not torch.allclose(attention(x, x), attention(x, x))
    attention.eval()
    torch.testing.assert_close(attention(x, x), attention(x, x))
