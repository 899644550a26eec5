"""Sampling: the filters on hand-made distributions, greedy = top-k 1, seeded determinism."""

from __future__ import annotations

import math

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.decoding.sampling import Sampler, filter_logits
from seqlab.experiments.lm.bible_en import transformer_lm_config

PROBS = torch.tensor([[0.5, 0.25, 0.15, 0.1]])


def test_temperature_rescales_log_probabilities() -> None:
    logits = PROBS.log()
    assert torch.allclose(filter_logits(logits, temperature=1.0).exp(), PROBS)
    sharpened = filter_logits(logits, temperature=0.5).exp()
    expected = PROBS**2 / (PROBS**2).sum()
    assert torch.allclose(sharpened, expected)


def test_top_k_keeps_the_k_most_likely_renormalized() -> None:
    kept = filter_logits(PROBS.log(), top_k=2).exp()
    assert torch.allclose(kept, torch.tensor([[2 / 3, 1 / 3, 0.0, 0.0]]))


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (0.5, [1.0, 0.0, 0.0, 0.0]),  # the first token alone reaches 0.5
        (0.6, [0.5 / 0.75, 0.25 / 0.75, 0.0, 0.0]),  # the crossing token is kept
        (0.8, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.0]),
        (1.0, [0.5, 0.25, 0.15, 0.1]),
    ],
)
def test_top_p_keeps_the_smallest_nucleus_reaching_p(top_p: float, expected: list[float]) -> None:
    shuffled = torch.tensor([2, 0, 3, 1])  # the filter must not depend on the token order
    kept = filter_logits(PROBS.log()[:, shuffled], top_p=top_p).exp()
    assert torch.allclose(kept, torch.tensor([expected])[:, shuffled], atol=1e-6)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformer_lm_config(
        vocab_size=40, num_layers=1, model_dim=16, hidden_dim=32, num_heads=2, dropout_prob=0.0
    )
    return config.build().eval()


PROMPTS = [[5, 6, 7], [9], [11, 12]]


def _sample(model: torch.nn.Module, **settings: float) -> list[list[int]]:
    sampler = Sampler.Config(max_new_tokens=12, **settings).build()
    state = model.init_state(len(PROMPTS), sampler.num_steps(PROMPTS))
    return sampler.sample(model, state, PROMPTS, bos_id=2, eos_id=3)


def test_top_k_one_equals_greedy_and_greedy_follows_the_argmax() -> None:
    model = _model()
    greedy = _sample(model, temperature=0.0)
    assert _sample(model, top_k=1, seed=5) == greedy
    assert _sample(model, top_k=1, temperature=3.0, seed=7) == greedy
    # Greedy continuation of the first prompt, checked step by step against extend_step.
    state = model.init_state(1, 20)
    for token in [2, *PROMPTS[0]]:
        log_probs, state, _ = model.extend_step(state, torch.tensor([token]))
    for token in greedy[0]:
        assert int(log_probs.argmax()) == token
        log_probs, state, _ = model.extend_step(state, torch.tensor([token]))
    assert len(greedy[0]) == 12 or int(log_probs.argmax()) == 3


def test_sampling_is_deterministic_under_a_seed_and_varies_across_seeds() -> None:
    model = _model()
    first = _sample(model, seed=1, temperature=2.0)
    assert _sample(model, seed=1, temperature=2.0) == first
    assert any(_sample(model, seed=s, temperature=2.0) != first for s in (2, 3, 4))
    assert all(len(c) <= 12 for c in first)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="top_p"):
        Sampler.Config(top_p=0.0).build()
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(torch.zeros(1, 3), temperature=0.0)
    assert math.isinf(float(filter_logits(PROBS.log(), top_k=1)[0, 1]))
