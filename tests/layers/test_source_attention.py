"""The SourceAttention contract, checked for every source attention and its multi-head wrap.

Layer-specific math (each attention against a hand-written formula) is tested beside each
layer in its own file; here: shapes, padding, probabilities, step/full equivalence, beam
expansion and reordering, gradients, state dicts and configs.
"""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import Config
from seqlab.core.nested_map import NestedMap
from seqlab.layers.additive_attention import AdditiveAttention
from seqlab.layers.dot_product_attention import DotProductAttention
from seqlab.layers.location_sensitive_attention import LocationSensitiveAttention
from seqlab.layers.multi_head_source_attention import multi_head_source_attention_config
from seqlab.layers.source_attention import SourceAttention, masked_softmax

B, T, S, DQ, DK, DV = 3, 4, 7, 6, 5, 3
LENGTHS = [7, 4, 1]


def _inner_configs() -> dict[str, SourceAttention.Config]:
    return {
        "additive": AdditiveAttention.Config(query_dim=DQ, source_dim=DK, hidden_dim=8),
        "dot": DotProductAttention.Config(query_dim=DQ, source_dim=DQ),
        "dot_general_per_dim": DotProductAttention.Config(
            query_dim=DQ, source_dim=DK, project_source=True, per_dim_scale=True
        ),
        "location_previous": LocationSensitiveAttention.Config(
            query_dim=DQ, source_dim=DK, hidden_dim=8, location_features="previous",
            num_filters=4, filter_width=3,
        ),
        "location_both": LocationSensitiveAttention.Config(
            query_dim=DQ, source_dim=DK, hidden_dim=8, location_features="both",
            num_filters=4, filter_width=5,
        ),
    }  # fmt: skip


def _all_configs() -> dict[str, SourceAttention.Config]:
    configs = dict(_inner_configs())
    for name in ("additive", "dot", "location_both"):
        configs[f"multi_head_{name}"] = multi_head_source_attention_config(
            _inner_configs()[name], query_dim=DQ, source_dim=DK, value_dim=DV,
            hidden_dim=8, num_heads=2, output_dim=DV,
        )  # fmt: skip
    return configs


CONFIGS = _all_configs()
NAMES = sorted(CONFIGS)


def _build(name: str, seed: int = 0) -> SourceAttention:
    torch.manual_seed(seed)
    return CONFIGS[name].build()


def _paddings(lengths: list[int], max_length: int) -> torch.Tensor:
    return (torch.arange(max_length)[None, :] >= torch.tensor(lengths)[:, None]).float()


def _source(name: str, max_length: int = S, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """(source [B, S, Dk], values [B, S, Dv or Dk], paddings [B, S]) for ``name``."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.randn(B, max_length, DK if name != "dot" else DQ, generator=generator)
    values = torch.randn(B, max_length, DV, generator=generator)
    return source, values, _paddings(LENGTHS, max_length)


def _queries(num: int = B, steps: int = T, seed: int = 2) -> torch.Tensor:
    return torch.randn(num, steps, DQ, generator=torch.Generator().manual_seed(seed))


def _step_loop(
    attention: SourceAttention, queries: torch.Tensor, preprocessed: NestedMap
) -> tuple[torch.Tensor, torch.Tensor]:
    state = attention.init_state(preprocessed, queries.shape[0])
    contexts, probs = [], []
    for t in range(queries.shape[1]):
        context, step_probs, state = attention.extend_step(queries[:, t], preprocessed, state)
        contexts.append(context)
        probs.append(step_probs)
    return torch.stack(contexts, 1), torch.stack(probs, 1)


@pytest.mark.parametrize("name", NAMES)
def test_shapes(name: str) -> None:
    attention = _build(name)
    preprocessed = attention.preprocess_source(*_source(name))
    context, probs = attention(_queries(), preprocessed)
    assert context.shape == (B, T, DV) and probs.shape == (B, T, S)
    state = attention.init_state(preprocessed, B)
    context, probs, _ = attention.extend_step(_queries()[:, 0], preprocessed, state)
    assert context.shape == (B, DV) and probs.shape == (B, S)


@pytest.mark.parametrize("name", NAMES)
def test_probs_sum_to_one_over_real_positions_and_are_zero_on_padding(name: str) -> None:
    attention = _build(name)
    source, values, paddings = _source(name)
    paddings[2] = 1.0  # an example without any real position gets zeros, not NaN
    _, probs = attention(_queries(), attention.preprocess_source(source, values, paddings))
    assert torch.all(probs[paddings[:, None, :].expand_as(probs) > 0] == 0.0)
    sums = probs.sum(-1)
    torch.testing.assert_close(sums[:2], torch.ones(2, T))
    assert torch.all(sums[2] == 0.0)
    assert torch.all(probs >= 0)


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance(name: str) -> None:
    attention = _build(name)
    source, values, paddings = _source(name)
    queries = _queries()
    context, probs = attention(queries, attention.preprocess_source(source, values, paddings))

    padded = paddings[..., None] > 0
    noisy_source = torch.where(padded, 100 * torch.randn_like(source), source)
    noisy_values = torch.where(padded, float("nan"), values)
    noisy = attention(queries, attention.preprocess_source(noisy_source, noisy_values, paddings))
    torch.testing.assert_close(noisy, (context, probs))

    extra = 3  # more padding at the end changes nothing either
    longer_source = torch.cat([source, torch.randn(B, extra, source.shape[-1])], 1)
    longer_values = torch.cat([values, torch.randn(B, extra, DV)], 1)
    longer_paddings = torch.cat([paddings, torch.ones(B, extra)], 1)
    longer_context, longer_probs = attention(
        queries, attention.preprocess_source(longer_source, longer_values, longer_paddings)
    )
    torch.testing.assert_close(longer_context, context)
    torch.testing.assert_close(longer_probs[..., :S], probs)
    assert torch.all(longer_probs[..., S:] == 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_extend_step_matches_forward(name: str) -> None:
    attention = _build(name)
    preprocessed = attention.preprocess_source(*_source(name))
    queries = _queries()
    torch.testing.assert_close(
        _step_loop(attention, queries, preprocessed), attention(queries, preprocessed)
    )


@pytest.mark.parametrize("name", NAMES)
def test_stateful_attention_depends_on_earlier_steps(name: str) -> None:
    attention = _build(name)
    preprocessed = attention.preprocess_source(*_source(name))
    queries = _queries()
    changed = queries.clone()
    changed[:, 0] += 1.0
    _, probs = attention(queries, preprocessed)
    _, changed_probs = attention(changed, preprocessed)
    # Only stateful attention carries the first query's effect to the later steps.
    later_changed = not torch.allclose(probs[:, 1:], changed_probs[:, 1:])
    assert later_changed == attention.is_stateful


@pytest.mark.parametrize("name", NAMES)
def test_beam_expand_and_reorder_match_each_hypothesis_run_alone(name: str) -> None:
    """Every beam row equals a fresh run over the queries its hypothesis has seen.

    The beams share one copy of each source and are reordered within their example after
    every step, as in beam search; the reference runs ``forward`` over each row's query
    history against a source copied per row, so it shares no state handling with them.
    """
    attention = _build(name)
    beams = 3
    preprocessed = attention.preprocess_source(*_source(name))
    copies = attention.reorder_source(preprocessed, torch.arange(B).repeat_interleave(beams))
    # A first step before the expansion, so that there is a state worth copying per beam.
    first = _queries(B, 1, seed=6)[:, 0]
    _, _, state = attention.extend_step(first, preprocessed, attention.init_state(preprocessed, B))
    state = attention.expand_state(state, beams)
    history = first.repeat_interleave(beams, 0)[:, None]  # [B * K, steps so far, Dq]
    queries = _queries(B * beams, T, seed=5)
    generator = torch.Generator().manual_seed(7)
    for t in range(T):
        context, probs, state = attention.extend_step(queries[:, t], preprocessed, state)
        history = torch.cat([history, queries[:, t, None]], 1)
        expected_context, expected_probs = attention(history, copies)
        torch.testing.assert_close(context, expected_context[:, -1])
        torch.testing.assert_close(probs, expected_probs[:, -1])
        # Beams move only within their example, as in beam search.
        within = torch.stack([torch.randperm(beams, generator=generator) for _ in range(B)])
        indices = (within + beams * torch.arange(B)[:, None]).flatten()
        state = attention.reorder_state(state, indices)
        history = history[indices]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    attention = _build(name)
    source, values, paddings = _source(name)
    source.requires_grad_(True)
    context, probs = attention(_queries(), attention.preprocess_source(source, values, paddings))
    (context.square().sum() + (probs * torch.randn_like(probs)).sum()).backward()
    for param_name, parameter in attention.named_parameters():
        assert parameter.grad is not None, param_name
        assert parameter.grad.abs().sum() > 0, param_name
        assert torch.isfinite(parameter.grad).all(), param_name
    assert source.grad is not None and source.grad[:1].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    attention = _build(name, seed=0)
    other = _build(name, seed=1)
    other.load_state_dict(attention.state_dict())
    queries, source = _queries(), _source(name)
    torch.testing.assert_close(
        other(queries, other.preprocess_source(*source)),
        attention(queries, attention.preprocess_source(*source)),
    )


@pytest.mark.parametrize("name", NAMES)
def test_config_prints_and_round_trips(name: str) -> None:
    config = CONFIGS[name]
    text = config.to_text()
    assert f"query_dim = {DQ}" in text
    assert ".cls = " in text if name.startswith("multi_head") else "cls" not in text
    assert Config.from_dict(config.to_dict()) == config
    assert Config.from_dict(config.to_dict()).to_text() == text


def test_masked_softmax_in_bfloat16_is_float32_and_exact_on_padding() -> None:
    energies = torch.randn(2, 3, 5).bfloat16()
    paddings = _paddings([5, 2], 5)
    probs = masked_softmax(energies, paddings)
    assert probs.dtype == torch.float32
    assert torch.all(probs[1, :, 2:] == 0.0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3))


def test_bad_source_shapes_name_the_layer() -> None:
    attention = _build("additive")
    source, values, paddings = _source("additive")
    with pytest.raises(ValueError, match="AdditiveAttention: source must be"):
        attention.preprocess_source(source[..., :2], values, paddings)
    with pytest.raises(ValueError, match="source_paddings"):
        attention.preprocess_source(source, values, paddings[:, :3])
    preprocessed = attention.preprocess_source(source, values, paddings)
    with pytest.raises(ValueError, match="not a multiple"):
        attention.extend_step(torch.randn(B + 1, DQ), preprocessed, NestedMap())


@pytest.mark.parametrize("name", NAMES)
def test_runs_under_bfloat16_autocast_with_float32_probs(name: str) -> None:
    attention = _build(name)
    source, values, paddings = _source(name)
    source.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        context, probs = attention(
            _queries(), attention.preprocess_source(source, values, paddings)
        )
        context.float().sum().backward()
    assert probs.dtype == torch.float32 and torch.isfinite(source.grad).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, T))
    assert torch.all(probs[paddings[:, None, :].expand_as(probs) > 0] == 0.0)
