"""Quantization-aware training as a rewrite: Linear layers become fake-quantized ones.

``ExperimentConfig.quant`` selects the mode (``--set quant.mode=qat``). The rewrite has two
halves, both driven by that config, so no layer branches on quantization:

- :func:`rewrite_config` walks a config tree and swaps every ``Linear.Config`` for a
  ``FakeQuantizedLinear.Config`` of the same shape (layers built from configs).
- :func:`swap_linear_modules` swaps the ``torch.nn.Linear`` submodules of a built model for
  ``FakeQuantizedLinear`` ones with the same parameters (layers that still create
  ``nn.Linear`` directly, e.g. the projections inside attention and feed-forward blocks).

:func:`build_task` applies both; the run context builds every task through it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
from torch import nn

from seqlab.core.config import Config, ConfigError, param
from seqlab.layers.linear import Linear
from seqlab.quant.clipping_schedule import ClippingSchedule
from seqlab.quant.ema_domain import EmaMinMaxDomain
from seqlab.quant.fake_quantized_linear import FakeQuantizedLinear


@dataclasses.dataclass
class QuantizationConfig(Config):
    """How an experiment is quantized during training."""

    mode: Literal["none", "qat"] = param(
        "none", doc="'none', or 'qat': fake-quantize Linear weights and inputs in training."
    )
    schedule: ClippingSchedule.Config = param(
        ClippingSchedule.Config(),
        doc="QAT: weight clipping schedule; its bits and quant_start_step apply to inputs too.",
    )
    activation_ema_decay: float = param(0.99, doc="QAT: EMA decay of the input min/max ranges.")


def fake_quantized_config(
    input_dim: int, output_dim: int, bias: bool, quant: QuantizationConfig
) -> FakeQuantizedLinear.Config:
    """The ``FakeQuantizedLinear.Config`` replacing a linear layer of this shape."""
    return FakeQuantizedLinear.Config(
        input_dim=input_dim,
        output_dim=output_dim,
        bias=bias,
        schedule=quant.schedule.copy(),
        activations=EmaMinMaxDomain.Config(
            decay=quant.activation_ema_decay, bits=quant.schedule.bits
        ),
    )


def _check_mode(quant: QuantizationConfig) -> None:
    if quant.mode not in ("none", "qat"):
        raise ConfigError(f"quant.mode must be 'none' or 'qat', got {quant.mode!r}")


def rewrite_config(config: Config, quant: QuantizationConfig) -> Config:
    """A copy of ``config`` with every ``Linear.Config`` swapped for a fake-quantized one.

    With ``quant.mode == 'none'`` the copy is unchanged.
    """
    _check_mode(quant)
    config = config.copy()
    if quant.mode == "none":
        return config

    def rewrite(value: Any) -> Any:
        if type(value) is Linear.Config:  # not its subclasses, e.g. already fake-quantized
            return fake_quantized_config(value.input_dim, value.output_dim, value.bias, quant)
        if isinstance(value, Config):
            for field in dataclasses.fields(value):
                setattr(value, field.name, rewrite(getattr(value, field.name)))
            return value
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(rewrite(v) for v in value)
        return value

    return rewrite(config)


def swap_linear_modules(module: nn.Module, quant: QuantizationConfig) -> nn.Module:
    """Replaces, in place, every ``nn.Linear`` / ``Linear`` below ``module`` (not ``module``
    itself) by a ``FakeQuantizedLinear`` holding the same parameters; returns ``module``."""
    _check_mode(quant)
    if quant.mode == "none":
        return module
    for name, child in module.named_children():
        if type(child) in (nn.Linear, Linear):
            weight = child.weight
            replacement = fake_quantized_config(
                weight.shape[1], weight.shape[0], child.bias is not None, quant
            ).build()
            replacement.weight = weight
            replacement.bias = child.bias
            setattr(module, name, replacement)
        else:
            swap_linear_modules(child, quant)
    return module


def build_task(task_config: Config, quant: QuantizationConfig) -> Any:
    """Builds ``task_config`` with the quantization rewrite of ``quant`` applied.

    The swap draws no random numbers (the replaced layers' fresh init is discarded), so the
    random stream after building, and with it dropout, is the same as without quantization.
    """
    task = rewrite_config(task_config, quant).build()
    with torch.random.fork_rng(devices=[]):
        return swap_linear_modules(task, quant)


def set_quantization_step(module: nn.Module, step: int) -> None:
    """Tells every fake-quantized layer below ``module`` the current training step."""
    for child in module.modules():
        if isinstance(child, FakeQuantizedLinear):
            child.step.fill_(step)


@torch.no_grad()
def strip_fake_quantization(module: nn.Module) -> nn.Module:
    """Replaces, in place, every seqlab ``Linear`` by an ``nn.Linear``, a
    ``FakeQuantizedLinear`` with the weight it uses at its current step (clipped, and rounded
    once quantizing); returns ``module``. Inputs are no longer rounded: int8 runtimes quantize
    them themselves. (PyTorch's quantizers then find every projection as an ``nn.Linear``.)"""
    for name, child in module.named_children():
        if isinstance(child, Linear):
            weight = child.weight  # the effective weight of a FakeQuantizedLinear
            linear = nn.Linear(
                weight.shape[1], weight.shape[0], bias=child.bias is not None,
                dtype=weight.dtype, device=weight.device,
            )  # fmt: skip
            linear.weight.copy_(weight)
            if child.bias is not None:
                linear.bias.copy_(child.bias)
            linear.train(child.training)
            setattr(module, name, linear)
        else:
            strip_fake_quantization(child)
    return module
