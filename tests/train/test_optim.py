"""Tests for seqlab.train.optim."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from seqlab.train.optim import SGD, Adafactor, Adam, LearningRateSchedule, Optimizer

PEAK = 1e-3


def _schedule(kind: str, default_total_steps: int = 0, **kwargs: object) -> LearningRateSchedule:
    values = {"kind": kind, "peak_learning_rate": PEAK, "warmup_steps": 100, **kwargs}
    return LearningRateSchedule(LearningRateSchedule.Config(**values), default_total_steps)


@pytest.mark.parametrize("kind", ["inverse_sqrt", "cosine", "linear", "constant"])
def test_warmup_is_linear_from_zero(kind: str) -> None:
    schedule = _schedule(kind, total_steps=1000)
    assert schedule(1) == pytest.approx(PEAK / 100)
    assert schedule(0) == schedule(1)  # steps are 1-based; 0 is treated as 1
    assert schedule(25) == pytest.approx(PEAK / 4)
    assert schedule(50) == pytest.approx(PEAK / 2)
    assert schedule(100) == pytest.approx(PEAK)
    warmup = [schedule(s) for s in range(1, 101)]
    assert all(b > a for a, b in pairwise(warmup))


def test_inverse_sqrt() -> None:
    schedule = _schedule("inverse_sqrt")
    assert schedule(400) == pytest.approx(PEAK / 2)
    assert schedule(10_000) == pytest.approx(PEAK / 10)
    assert schedule(101) == pytest.approx(PEAK * math.sqrt(100 / 101))


def test_inverse_sqrt_without_warmup_starts_at_peak() -> None:
    schedule = _schedule("inverse_sqrt", warmup_steps=0)
    assert schedule(1) == pytest.approx(PEAK)
    assert schedule(4) == pytest.approx(PEAK / 2)


@pytest.mark.parametrize("final_fraction", [0.0, 0.1])
def test_cosine(final_fraction: float) -> None:
    schedule = _schedule("cosine", total_steps=1100, final_fraction=final_fraction)
    final = final_fraction * PEAK
    assert schedule(100) == pytest.approx(PEAK)
    assert schedule(600) == pytest.approx(final + (PEAK - final) * 0.5)
    assert schedule(350) == pytest.approx(final + (PEAK - final) * (1 + math.cos(math.pi / 4)) / 2)
    assert schedule(1100) == pytest.approx(final, abs=1e-12)
    assert schedule(5000) == pytest.approx(final, abs=1e-12)
    decay = [schedule(s) for s in range(100, 1200, 10)]
    assert all(b <= a for a, b in pairwise(decay))


@pytest.mark.parametrize("final_fraction", [0.0, 0.2])
def test_linear(final_fraction: float) -> None:
    schedule = _schedule("linear", total_steps=1100, final_fraction=final_fraction)
    final = final_fraction * PEAK
    assert schedule(100) == pytest.approx(PEAK)
    assert schedule(350) == pytest.approx(final + (PEAK - final) * 0.75)
    assert schedule(600) == pytest.approx(final + (PEAK - final) * 0.5)
    assert schedule(1100) == pytest.approx(final, abs=1e-12)
    assert schedule(2000) == pytest.approx(final, abs=1e-12)


def test_constant_after_warmup() -> None:
    schedule = _schedule("constant")
    assert [schedule(s) for s in (100, 101, 10_000)] == pytest.approx([PEAK] * 3)


def test_total_steps_defaults_to_the_given_default() -> None:
    schedule = _schedule("cosine", default_total_steps=1100)
    assert schedule.total_steps == 1100
    assert schedule(600) == pytest.approx(PEAK / 2)
    assert _schedule("cosine", default_total_steps=1100, total_steps=300).total_steps == 300


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_without_total_steps_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match=f"a {kind} schedule needs total_steps > 0"):
        _schedule(kind)


def test_bad_kind_is_refused() -> None:
    with pytest.raises(ValueError) as info:
        _schedule("step", total_steps=10)
    message = str(info.value)
    assert "'step'" in message
    assert "['inverse_sqrt', 'cosine', 'linear', 'constant', 'exponential']" in message


def test_inverse_sqrt_is_the_transformer_papers_schedule() -> None:
    # Vaswani et al. 2017: lr = model_dim^-0.5 * min(step^-0.5, step * warmup^-1.5), here
    # with model_dim 512 and 4000 warm-up steps: a peak of 512^-0.5 * 4000^-0.5 = 6.9877e-4.
    peak = (512 * 4000) ** -0.5
    schedule = LearningRateSchedule(
        LearningRateSchedule.Config(kind="inverse_sqrt", peak_learning_rate=peak, warmup_steps=4000)
    )
    assert peak == pytest.approx(6.98771e-4, rel=1e-5)
    assert schedule(1) == pytest.approx(1.74693e-7, rel=1e-5)  # 512^-0.5 * 4000^-1.5
    assert schedule(4000) == pytest.approx(6.98771e-4, rel=1e-5)
    assert schedule(16000) == pytest.approx(3.49386e-4, rel=1e-5)  # 512^-0.5 * 16000^-0.5
    assert schedule(100_000) == pytest.approx(1.39754e-4, rel=1e-5)


def test_exponential_is_rnmt_plus() -> None:
    # Warm-up to step 100, constant to 1000, then halving every 500 steps down to a quarter.
    schedule = _schedule(
        "exponential", decay_start_step=1000, decay_end_step=2000, final_fraction=0.25
    )
    assert schedule(50) == pytest.approx(PEAK / 2)
    assert schedule(100) == pytest.approx(PEAK)
    assert schedule(500) == pytest.approx(PEAK)
    assert schedule(1000) == pytest.approx(PEAK)
    assert schedule(1500) == pytest.approx(PEAK / 2)
    assert schedule(1250) == pytest.approx(PEAK * 0.25**0.25)  # 7.0711e-4
    assert schedule(1250) == pytest.approx(7.0711e-4, rel=1e-4)
    assert schedule(2000) == pytest.approx(PEAK / 4)
    assert schedule(10_000) == pytest.approx(PEAK / 4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"decay_start_step": 50, "decay_end_step": 200}, "warmup_steps <= decay_start_step"),
        ({"decay_start_step": 300, "decay_end_step": 300}, "decay_start_step < decay_end_step"),
        ({"decay_start_step": 300, "decay_end_step": 400, "final_fraction": 0.0}, "0 < final"),
    ],
)
def test_exponential_refuses_bad_steps_or_fraction(
    overrides: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _schedule("exponential", **{"final_fraction": 0.5, **overrides})


# ---- optimizers ---------------------------------------------------------------------------------


def test_adam_builds_adamw_from_config() -> None:
    params = list(torch.nn.Linear(2, 2).parameters())
    config = Adam.Config(beta1=0.8, beta2=0.9, epsilon=1e-6, weight_decay=0.01)
    optimizer = config.build(params, lr=0.5)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, undecayed = optimizer.param_groups
    for group in (decayed, undecayed):
        assert group["lr"] == 0.5
        assert group["betas"] == (0.8, 0.9)
        assert group["eps"] == 1e-6
    assert decayed["weight_decay"] == 0.01
    assert undecayed["weight_decay"] == 0.0
    assert decayed["params"] == [params[0]]  # the weight matrix
    assert undecayed["params"] == [params[1]]  # the bias


def test_without_decay_there_is_one_group_as_before() -> None:
    params = list(torch.nn.Linear(2, 2).parameters())
    optimizer = Adam.Config().build(params, lr=0.5)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["params"] == params
    assert optimizer.param_groups[0]["weight_decay"] == 0.0


def _zero_gradient_step(config: Optimizer.Config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """One step with zero gradients: only the weight decay moves any parameter."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    torch.nn.init.normal_(model[1].weight)
    torch.nn.init.normal_(model[1].bias)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = config.build(list(model.parameters()), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return model, before


@pytest.mark.parametrize("config", [Adam.Config(), Adafactor.Config(), SGD.Config()])
def test_weight_decay_spares_norm_scales_and_biases(config: Optimizer.Config) -> None:
    config.weight_decay = 0.5
    model, before = _zero_gradient_step(config)
    linear_weight, linear_bias, norm_scale, norm_bias = model.parameters()
    # AdamW and Adafactor: w * (1 - lr * wd); SGD: w - lr * wd * w. Both are w * 0.95.
    assert torch.allclose(linear_weight, before[0] * 0.95)
    assert torch.equal(linear_bias, before[1])
    assert torch.equal(norm_scale, before[2])
    assert torch.equal(norm_bias, before[3])


def test_weight_decay_of_norm_and_bias_when_configured() -> None:
    model, before = _zero_gradient_step(SGD.Config(weight_decay=0.5, decay_norm_and_bias=True))
    for after, original in zip(model.parameters(), before, strict=True):
        assert torch.allclose(after, original * 0.95)


def test_negative_weight_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="weight_decay' must be >= 0, got -0.1"):
        Adam.Config(weight_decay=-0.1).build([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


def test_adafactor_builds_from_config() -> None:
    params = list(torch.nn.Linear(2, 2).parameters())
    config = Adafactor.Config(beta2_decay=-0.7, epsilon1=1e-30, epsilon2=1e-4, clip_threshold=2.0)
    optimizer = config.build(params, lr=0.05)
    assert isinstance(optimizer, torch.optim.Adafactor)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["beta2_decay"], group["eps"], group["d"]) == (
        0.05,
        -0.7,
        (1e-30, 1e-4),
        2.0,
    )


def _regression_problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 8, generator=generator)
    true_weight = torch.randn(8, 3, generator=generator)
    return inputs, inputs @ true_weight + 0.5


@pytest.mark.parametrize(
    ("config", "lr"),
    [
        (Adam.Config(), 0.05),
        (Adam.Config(weight_decay=0.01), 0.05),
        (Adafactor.Config(), 0.05),
        (SGD.Config(momentum=0.9), 0.02),
        (SGD.Config(momentum=0.9, nesterov=True), 0.02),
        (SGD.Config(momentum=0.0), 0.05),
    ],
    ids=["adam", "adamw", "adafactor", "sgd_momentum", "sgd_nesterov", "sgd_plain"],
)
def test_each_optimizer_fits_a_linear_regression(config: Optimizer.Config, lr: float) -> None:
    inputs, targets = _regression_problem()
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    optimizer = config.build(list(model.parameters()), lr=lr)

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(inputs), targets)

    initial = loss().item()
    for _ in range(200):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    assert loss().item() < 0.05 * initial, (initial, loss().item())


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_the_textbook_update(nesterov: bool) -> None:
    # v = mu * v + g; w -= lr * v (Nesterov: w -= lr * (g + mu * v)), on f(w) = |w - c|^2 / 2
    # whose gradient is w - c, computed by hand in float64.
    lr, mu = 0.1, 0.9
    target = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    weight = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = SGD.Config(momentum=mu, nesterov=nesterov).build([weight], lr=lr)
    expected = torch.zeros(3, dtype=torch.float64)
    velocity = torch.zeros(3, dtype=torch.float64)
    for step in range(1, 6):
        optimizer.zero_grad()
        (0.5 * ((weight - target) ** 2).sum()).backward()
        optimizer.step()
        gradient = expected - target
        velocity = mu * velocity + gradient
        expected = expected - lr * (gradient + mu * velocity if nesterov else velocity)
        assert torch.allclose(weight.detach(), expected, rtol=0, atol=1e-12)
        if step == 2:
            # Plain: w1 = 0.1 c; v2 = 0.9 (-c) - 0.9 c, w2 = 0.1 c + 0.18 c.
            # Nesterov: w1 = 0.1 (c + 0.9 c); v2 = -0.9 c - 0.81 c, w2 = 0.19 c + 0.1 (0.81
            # + 0.9 * 1.71) c.
            assert torch.allclose(weight.detach(), (0.4249 if nesterov else 0.28) * target)


def test_nesterov_needs_momentum() -> None:
    with pytest.raises(ValueError, match="nesterov needs optimizer.momentum > 0"):
        SGD.Config(momentum=0.0, nesterov=True).build([torch.nn.Parameter(torch.zeros(1))], lr=1)


def test_every_optimizer_config_prints_and_round_trips() -> None:
    from seqlab.core.config import Config

    for config in (Adam.Config(), Adafactor.Config(), SGD.Config(nesterov=True)):
        text = config.to_text()
        assert "decay_norm_and_bias = False" in text
        assert Config.from_dict(config.to_dict()) == config
