"""FakeQuantizedLinear and its EMA input domain: exact before clipping, on the int8 grid after
quantization starts, within quantization error of the float layer, and traceable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seqlab.quant.clipping_schedule import ClippingSchedule
from seqlab.quant.ema_domain import EmaMinMaxDomain
from seqlab.quant.fake_quantized_linear import FakeQuantizedLinear

SCHEDULE = ClippingSchedule.Config(
    clip_start_step=10, clip_end_step=20, quant_start_step=30, start_cap=4.0, end_cap=0.5
)


def layers(seed: int = 0) -> tuple[FakeQuantizedLinear, nn.Linear]:
    torch.manual_seed(seed)
    fake = FakeQuantizedLinear.Config(input_dim=16, output_dim=8, schedule=SCHEDULE).build()
    reference = nn.Linear(16, 8)
    reference.load_state_dict(fake.state_dict(), strict=False)
    return fake, reference


def test_identical_to_linear_before_clipping_starts() -> None:
    fake, reference = layers()
    x = torch.randn(4, 5, 16)
    fake.train()
    fake.step.fill_(9)
    torch.testing.assert_close(fake(x), reference(x), rtol=0, atol=0)


def test_weights_are_clipped_to_the_scheduled_cap() -> None:
    fake, _ = layers()
    with torch.no_grad():
        fake.float_weight[0, 0] = 3.0
    fake.step.fill_(15)  # halfway: cap (4 + 0.5) / 2
    assert fake.effective_weight().abs().max().item() == pytest.approx(2.25)
    fake.step.fill_(25)
    assert fake.effective_weight().abs().max().item() == pytest.approx(0.5)


def test_quantized_weights_lie_on_a_symmetric_int8_grid_per_row() -> None:
    fake, _ = layers()
    fake.step.fill_(30)
    weight = fake.effective_weight().detach()
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    levels = weight / scale
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    assert levels.abs().max() <= 127 + 1e-4


def test_quantized_outputs_stay_within_quantization_error() -> None:
    fake, reference = layers()
    x = torch.randn(64, 16)
    fake.train()
    fake(x)  # observe the input range
    fake.eval()
    fake.step.fill_(30)
    # Clipping at 0.5 does not touch these weights (xavier bound is sqrt(6 / 24) = 0.5).
    out, expected = fake(x), reference(x)
    assert not torch.equal(out, expected)
    # Each product carries at most half a step of weight and of input error.
    weight_step = reference.weight.abs().amax(dim=1) / 127
    input_step = x.abs().max() / 127
    bound = 0.5 * (
        weight_step * x.abs().sum(dim=1, keepdim=True)
        + input_step * reference.weight.abs().sum(dim=1)
        + weight_step * input_step * 16
    )
    assert ((out - expected).abs() <= bound + 1e-6).all()


def test_gradients_flow_straight_through_the_rounding() -> None:
    fake, _ = layers()
    fake.train()
    fake.step.fill_(40)
    x = torch.randn(3, 16, requires_grad=True)
    fake(x).square().sum().backward()
    assert fake.float_weight.grad is not None and fake.float_weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ema_domain_tracks_min_and_max_in_training_only() -> None:
    domain = EmaMinMaxDomain.Config(decay=0.5).build()
    off = torch.tensor(False)
    domain.train()
    domain(torch.tensor([-1.0, 2.0]), off)
    assert (domain.ema_min.item(), domain.ema_max.item()) == (-1.0, 2.0)  # first call sets
    domain(torch.tensor([-3.0, 4.0]), off)
    assert (domain.ema_min.item(), domain.ema_max.item()) == (-2.0, 3.0)
    domain.eval()
    domain(torch.tensor([-100.0, 100.0]), off)
    assert domain.range().item() == 3.0
    quantized = domain(torch.tensor([5.0, 1.0]), torch.tensor(True))
    torch.testing.assert_close(quantized, torch.tensor([3.0, round(127 / 3) * 3 / 127]))


def test_fake_quantized_linear_exports_with_its_schedule_intact() -> None:
    fake, _ = layers()
    fake.eval()
    x = torch.randn(2, 16)
    for step in (0, 15, 30):
        fake.step.fill_(step)
        exported = torch.export.export(fake, (x,))
        torch.testing.assert_close(exported.module()(x), fake(x))
