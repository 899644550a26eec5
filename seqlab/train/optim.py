"""Optimizer and learning-rate schedules."""

from __future__ import annotations

import dataclasses
import math

import torch

from seqlab.core.config import Config, Configurable, param


class Adam(Configurable):
    """Adam (AdamW when weight_decay > 0) over a module's parameters."""

    @dataclasses.dataclass
    class Config(Config):
        beta1: float = param(0.9, doc="Adam beta1.")
        beta2: float = param(0.98, doc="Adam beta2.")
        epsilon: float = param(1e-9, doc="Adam epsilon.")
        weight_decay: float = param(0.0, doc="Decoupled weight decay (AdamW).")

    def __new__(cls, config: Config, params: list[torch.nn.Parameter], lr: float):  # type: ignore[misc]
        return torch.optim.AdamW(
            params,
            lr=lr,
            betas=(config.beta1, config.beta2),
            eps=config.epsilon,
            weight_decay=config.weight_decay,
            foreach=True,
        )


class LearningRateSchedule(Configurable):
    """Linear warm-up to ``peak_learning_rate``, then one of several decays.

    kinds:
      inverse_sqrt: the Transformer paper's schedule, lr = peak * min(s / w, sqrt(w / s)).
      cosine: cosine decay from the peak to ``final_fraction * peak`` at ``total_steps``.
      linear: linear decay from the peak to ``final_fraction * peak`` at ``total_steps``.
      constant: the peak after warm-up.
    """

    @dataclasses.dataclass
    class Config(Config):
        kind: str = param("inverse_sqrt", doc="inverse_sqrt, cosine, linear or constant.")
        peak_learning_rate: float = param(1e-3, doc="Learning rate at the end of warm-up.")
        warmup_steps: int = param(4000, doc="Steps of linear warm-up from 0.")
        total_steps: int = param(0, doc="Steps over which cosine/linear decay (0 = max_steps).")
        final_fraction: float = param(0.0, doc="Final lr as a fraction of the peak.")

    def __init__(self, config: Config, default_total_steps: int = 0) -> None:
        if config.kind not in ("inverse_sqrt", "cosine", "linear", "constant"):
            raise ValueError(
                f"schedule kind {config.kind!r}; expected inverse_sqrt, cosine, linear or constant"
            )
        self.config = config
        self.total_steps = config.total_steps or default_total_steps
        if config.kind in ("cosine", "linear") and self.total_steps <= 0:
            # Without it the decay would end right after warm-up, silently.
            raise ValueError(f"a {config.kind} schedule needs total_steps > 0")

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
        span = max(self.total_steps - c.warmup_steps, 1)
        progress = min((step - c.warmup_steps) / span, 1.0)
        if c.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        return c.peak_learning_rate * (c.final_fraction + (1.0 - c.final_fraction) * shape)
