"""Variational weight noise (Graves 2011; Lingvo's ``vn`` params), a training regularizer.

For each training update from ``start_step`` on, fresh Gaussian noise of standard deviation
``std`` is added to every trainable parameter for the forward and backward pass; the exact
weights are put back before the optimizer step, so the stored weights never carry noise and
eval, decode and export never see it. The gradient w.r.t. the noisy weights is the gradient
the update uses (d(w + n)/dw = 1). The noise has its own generator, seeded from the
experiment seed, whose state goes into every checkpoint: resuming draws the same noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

from seqlab.core.config import Config, Configurable, param

WEIGHT_NOISE_CHECKPOINT_KEY = "weight_noise"
# Keeps the noise stream apart from torch's global stream seeded with the same seed.
_SEED_OFFSET = 0x5EED


class WeightNoise(Configurable):
    """Adds N(0, std^2) noise to the parameters around a training forward/backward pass."""

    @dataclasses.dataclass
    class Config(Config):
        std: float = param(0.0, doc="Standard deviation of the noise (0 = off).", at_least=0)
        start_step: int = param(
            0, doc="Add noise once this many updates are done (0 = from the first update)."
        )

    def __init__(self, config: Config, params: list[torch.nn.Parameter], seed: int) -> None:
        self.config = config
        self.params = params
        self.generator = torch.Generator().manual_seed(seed + _SEED_OFFSET)

    def is_active(self, completed_steps: int) -> bool:
        return self.config.std > 0 and completed_steps >= self.config.start_step

    @contextlib.contextmanager
    def applied(self, completed_steps: int) -> Iterator[None]:
        """Within the block the parameters carry noise (if active after ``completed_steps``
        updates); on leaving, the exact weights are restored (gradients are kept)."""
        if not self.is_active(completed_steps):
            yield
            return
        with torch.no_grad():
            weights = [p.detach() for p in self.params]
            saved = [w.clone() for w in weights]
            for w in weights:
                noise = torch.randn(w.shape, generator=self.generator, dtype=w.dtype).to(w.device)
                w.add_(noise, alpha=self.config.std)
        try:
            yield
        finally:
            with torch.no_grad():
                # A copy, not a subtraction: (w + n) - n need not equal w in floating point.
                torch._foreach_copy_(weights, saved)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
