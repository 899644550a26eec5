"""Tests for seqlab.train.weight_noise."""

from __future__ import annotations

import pytest
import torch

from seqlab.train.weight_noise import WeightNoise


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))


def _noise(model: torch.nn.Module, std: float = 0.1, start_step: int = 0, seed: int = 7):
    params = list(model.parameters())
    return WeightNoise.Config(std=std, start_step=start_step).build(params, seed=seed)


INPUTS = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))


def _output_and_grads(
    model: torch.nn.Module, noise: WeightNoise, completed_steps: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    with noise.applied(completed_steps):
        output = model(INPUTS)
        output.square().sum().backward()
    return output.detach(), [p.grad.clone() for p in model.parameters()]


def test_noise_changes_outputs_from_the_start_step_and_leaves_weights_unchanged() -> None:
    model = _model()
    weights = [p.detach().clone() for p in model.parameters()]
    clean, clean_grads = _output_and_grads(model, _noise(model, std=0.0), 5)
    noise = _noise(model, start_step=3)
    before_start, grads = _output_and_grads(model, noise, 2)
    assert torch.equal(before_start, clean)
    assert all(torch.equal(a, b) for a, b in zip(grads, clean_grads, strict=True))
    noisy, noisy_grads = _output_and_grads(model, noise, 3)
    assert not torch.allclose(noisy, clean, atol=1e-3)
    assert not torch.allclose(noisy_grads[0], clean_grads[0], atol=1e-3)
    # The stored weights are bitwise what they were; the gradients (of the noisy forward) stay.
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))
    assert all(p.grad is not None for p in model.parameters())


def test_gradients_are_those_of_the_noisy_weights() -> None:
    model = _model()
    _, noisy_grads = _output_and_grads(model, _noise(model), 0)
    # The same noise, drawn again from the same seed, added by hand.
    generator = torch.Generator().manual_seed(_noise(model).generator.initial_seed())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator), alpha=0.1)
    model.zero_grad()
    model(INPUTS).square().sum().backward()
    assert all(
        torch.allclose(p.grad, g, atol=1e-6)
        for p, g in zip(model.parameters(), noisy_grads, strict=True)
    )


def test_deterministic_under_the_seed() -> None:
    model = _model()

    def two_updates(noise: WeightNoise) -> list[torch.Tensor]:
        return [_output_and_grads(model, noise, step)[0] for step in (0, 1)]

    first, again = two_updates(_noise(model)), two_updates(_noise(model))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], first[1])  # fresh noise every update
    other_seed = _output_and_grads(model, _noise(model, seed=8), 0)[0]
    assert not torch.equal(other_seed, first[0])


def test_own_generator_leaves_the_global_stream_alone() -> None:
    model = _model()
    torch.manual_seed(3)
    _output_and_grads(model, _noise(model), 0)
    after_noise = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(3), after_noise)


def test_noise_has_the_configured_std() -> None:
    weight = torch.nn.Parameter(torch.zeros(200, 200))
    noise = WeightNoise.Config(std=0.05).build([weight], seed=0)
    with noise.applied(0):
        seen = weight.detach().clone()
    assert seen.std().item() == pytest.approx(0.05, rel=0.02)
    assert seen.mean().item() == pytest.approx(0.0, abs=2e-3)
    assert torch.equal(weight, torch.zeros(200, 200))


def test_weights_are_restored_when_the_block_raises() -> None:
    model = _model()
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="diverged"), _noise(model).applied(0):
        raise RuntimeError("diverged")
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))


def test_state_dict_resumes_the_same_noise_stream() -> None:
    model = _model()
    straight = _noise(model)
    _output_and_grads(model, straight, 0)
    state = {k: v.clone() for k, v in straight.state_dict().items()}
    expected = _output_and_grads(model, straight, 1)[0]
    resumed = _noise(model, seed=99)
    resumed.load_state_dict(state)
    assert torch.equal(_output_and_grads(model, resumed, 1)[0], expected)


def test_negative_std_is_refused() -> None:
    with pytest.raises(ValueError, match="std' must be >= 0, got -1.0"):
        WeightNoise.Config(std=-1.0).build([], seed=0)
