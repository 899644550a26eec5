"""Optimizers (Adam/AdamW, Adafactor, SGD with momentum) and learning-rate schedules.

An optimizer config builds a ``torch.optim`` optimizer: ``config.build(params, lr=...)``.
Weight decay is cheap in every case because no optimizer adds a term to the loss; each
optimizer's docstring says how it applies the decay. One-dimensional parameters (layer-norm
scales and shifts, biases) are not decayed unless ``decay_norm_and_bias`` is set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from seqlab.core.config import Config, ConfigError, Configurable, param


def weight_decay_groups(
    params: list[torch.nn.Parameter], weight_decay: float, decay_norm_and_bias: bool
) -> list[dict]:
    """Param groups for a torch optimizer: decayed parameters, then undecayed 1-D ones.

    With ``weight_decay == 0`` or ``decay_norm_and_bias`` there is a single group, so that
    such optimizers (and their state dicts) stay what they were before decay groups existed.
    """
    if weight_decay == 0.0 or decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


class Optimizer(Configurable):
    """Base of the optimizer configs; ``build(params, lr)`` returns a ``torch.optim`` one."""

    @dataclasses.dataclass
    class Config(Config):
        weight_decay: float = param(0.0, doc="Weight decay (each optimizer says how).", at_least=0)
        decay_norm_and_bias: bool = param(
            False, doc="Also decay 1-D parameters: layer-norm scales and shifts, biases."
        )

    def __new__(  # type: ignore[misc]
        cls, config: Config, params: list[torch.nn.Parameter], lr: float
    ) -> torch.optim.Optimizer:
        groups = weight_decay_groups(params, config.weight_decay, config.decay_norm_and_bias)
        return cls.create(config, groups, lr)

    @classmethod
    def create(cls, config: Config, groups: list[dict], lr: float) -> torch.optim.Optimizer:
        """The torch optimizer over ``groups`` (each carries its ``weight_decay``)."""
        raise NotImplementedError(f"{cls.__name__} does not build an optimizer; use a subclass")


class Adam(Optimizer):
    """Adam; with weight_decay > 0 it is AdamW (Loshchilov & Hutter 2019).

    The decay is decoupled from the gradient statistics: each step ``w -= lr * wd * w``.
    """

    @dataclasses.dataclass
    class Config(Optimizer.Config):
        beta1: float = param(0.9, doc="Adam beta1.", at_least=0, below=1)
        beta2: float = param(0.98, doc="Adam beta2.", at_least=0, below=1)
        epsilon: float = param(1e-9, doc="Adam epsilon.", at_least=0)
        weight_decay: float = param(0.0, doc="Decoupled weight decay (AdamW).", at_least=0)

    @classmethod
    def create(cls, config: Config, groups: list[dict], lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            groups, lr=lr, betas=(config.beta1, config.beta2), eps=config.epsilon, foreach=True
        )


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern 2018) as ``torch.optim.Adafactor`` implements it.

    Factored second moments (row and column statistics for matrices), no first moment, the
    step scaled by ``max(epsilon2, RMS(w)) * min(lr, 1/sqrt(step))`` and the update clipped
    to RMS ``clip_threshold``. The decay is decoupled: each step ``w *= 1 - lr * wd``.
    """

    @dataclasses.dataclass
    class Config(Optimizer.Config):
        beta2_decay: float = param(
            -0.8, doc="Second-moment decay: 1 - beta2 at step t is t ** beta2_decay."
        )
        epsilon1: float | None = param(
            None, doc="Floor of the second moment (None = the dtype's machine epsilon)."
        )
        epsilon2: float = param(
            1e-3, doc="Floor of the parameter RMS that scales the step.", at_least=0
        )
        clip_threshold: float = param(1.0, doc="Clip the update to this RMS (torch's d).", above=0)
        weight_decay: float = param(
            0.0, doc="Decoupled weight decay: w *= 1 - lr * wd.", at_least=0
        )

    @classmethod
    def create(cls, config: Config, groups: list[dict], lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adafactor(
            groups,
            lr=lr,
            beta2_decay=config.beta2_decay,
            eps=(config.epsilon1, config.epsilon2),
            d=config.clip_threshold,
            foreach=True,
        )


class SGD(Optimizer):
    """Stochastic gradient descent with (optionally Nesterov) momentum.

    ``v = momentum * v + g; w -= lr * v`` (Nesterov: ``w -= lr * (g + momentum * v)``). The
    decay is an L2 penalty folded into the gradient, ``g += wd * w``: the same as adding
    ``wd / 2 * |w|^2`` to the loss, without computing it.
    """

    @dataclasses.dataclass
    class Config(Optimizer.Config):
        momentum: float = param(0.9, doc="Momentum (0 = plain SGD).", at_least=0)
        nesterov: bool = param(False, doc="Nesterov momentum.")
        weight_decay: float = param(
            0.0, doc="L2 penalty added to the gradient: g += wd * w.", at_least=0
        )

    @classmethod
    def create(cls, config: Config, groups: list[dict], lr: float) -> torch.optim.Optimizer:
        if config.nesterov and config.momentum <= 0:
            raise ValueError("optimizer.nesterov needs optimizer.momentum > 0")
        return torch.optim.SGD(
            groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov, foreach=True
        )


ScheduleKind = Literal["inverse_sqrt", "cosine", "linear", "constant", "exponential"]


class LearningRateSchedule(Configurable):
    """Linear warm-up to ``peak_learning_rate``, then one of several decays.

    kinds:
      inverse_sqrt: the Transformer paper's schedule, lr = peak * min(s / w, sqrt(w / s)); the
        paper's ``model_dim ** -0.5 * min(s ** -0.5, s * w ** -1.5)`` is this with
        ``peak = (model_dim * w) ** -0.5``.
      cosine: cosine decay from the peak to ``final_fraction * peak`` at ``total_steps``.
      linear: linear decay from the peak to ``final_fraction * peak`` at ``total_steps``.
      constant: the peak after warm-up.
      exponential: RNMT+'s schedule (Chen et al. 2018; Lingvo's
        LinearRampupExponentialDecayScaledByNumSplitSchedule with one split): the peak until
        ``decay_start_step``, then exponential decay to ``final_fraction * peak`` at
        ``decay_end_step``, constant after.
    """

    @dataclasses.dataclass
    class Config(Config):
        kind: ScheduleKind = param(
            "inverse_sqrt", doc="inverse_sqrt, cosine, linear, constant or exponential."
        )
        peak_learning_rate: float = param(1e-3, doc="Learning rate at the end of warm-up.", above=0)
        warmup_steps: int = param(4000, doc="Steps of linear warm-up from 0.", at_least=0)
        total_steps: int = param(
            0, doc="Steps over which cosine/linear decay (0 = max_steps).", at_least=0
        )
        final_fraction: float = param(
            0.0, doc="Final lr as a fraction of the peak.", at_least=0, at_most=1
        )
        decay_start_step: int = param(0, doc="exponential: the step its decay starts.", at_least=0)
        decay_end_step: int = param(
            0, doc="exponential: the step it reaches the final lr.", at_least=0
        )

    def __init__(self, config: Config, default_total_steps: int = 0) -> None:
        config.validate("trainer.schedule.")  # built directly, not by config.build()
        self.config = config
        self.total_steps = config.total_steps or default_total_steps
        if config.kind in ("cosine", "linear") and self.total_steps <= 0:
            # Without it the decay would end right after warm-up, silently.
            raise ConfigError(f"a {config.kind} schedule needs total_steps > 0")
        if config.kind == "exponential":
            if not config.warmup_steps <= config.decay_start_step < config.decay_end_step:
                raise ConfigError(
                    "an exponential schedule needs warmup_steps <= decay_start_step < "
                    f"decay_end_step; got {config.warmup_steps}, {config.decay_start_step}, "
                    f"{config.decay_end_step}"
                )
            if not 0.0 < config.final_fraction <= 1.0:
                raise ConfigError(
                    "an exponential schedule needs 0 < final_fraction <= 1; "
                    f"got {config.final_fraction}"
                )

    def __call__(self, step: int) -> float:
        """Learning rate for the update numbered ``step`` (1-based)."""
        c = self.config
        step = max(step, 1)
        if step <= c.warmup_steps:
            return c.peak_learning_rate * step / max(c.warmup_steps, 1)
        if c.kind == "inverse_sqrt":
            return c.peak_learning_rate * math.sqrt(max(c.warmup_steps, 1) / step)
        if c.kind == "constant":
            return c.peak_learning_rate
        if c.kind == "exponential":
            span = c.decay_end_step - c.decay_start_step
            progress = min(max(step - c.decay_start_step, 0) / span, 1.0)
            return c.peak_learning_rate * c.final_fraction**progress
        span = max(self.total_steps - c.warmup_steps, 1)
        progress = min((step - c.warmup_steps) / span, 1.0)
        if c.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        return c.peak_learning_rate * (c.final_fraction + (1.0 - c.final_fraction) * shape)
