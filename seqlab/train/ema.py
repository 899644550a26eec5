"""Exponential moving average of the weights (Polyak averaging), for eval, decode and export.

The trainer updates the average after every optimizer step and stores it in each checkpoint
under ``"ema"`` (parameter name -> tensor); eval, decode and the Predictor can load it in
place of the raw weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from seqlab.core.config import Config, Configurable, param
from seqlab.train.checkpoint import CheckpointError

EMA_CHECKPOINT_KEY = "ema"
# Eval and decode outputs made with the averaged weights go to e.g. eval_dev_ema/.
EMA_JOB_SUFFIX = "_ema"


class ExponentialMovingAverage(Configurable):
    """Keeps ``average = decay * average + (1 - decay) * weights`` of trainable parameters.

    Before ``start_step`` the average simply follows the weights, so that it does not carry
    the random initialization into the averaged model.
    """

    @dataclasses.dataclass
    class Config(Config):
        decay: float = param(
            0.0, doc="Decay per optimizer step (0 = off), e.g. 0.999.", at_least=0, below=1
        )
        start_step: int = param(
            0, doc="Updates numbered below this copy the weights; averaging starts here."
        )

    def __init__(self, config: Config, named_params: list[tuple[str, torch.nn.Parameter]]) -> None:
        self.config = config
        self.names = [name for name, _ in named_params]
        self.params = [p for _, p in named_params]
        self.averages = [p.detach().clone() for p in self.params] if self.enabled else []

    @property
    def enabled(self) -> bool:
        return self.config.decay > 0.0

    @torch.no_grad()
    def reset(self) -> None:
        """Restarts the average from the current weights."""
        torch._foreach_copy_(self.averages, [p.detach() for p in self.params])

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Folds in the weights after the optimizer update numbered ``step`` (1-based)."""
        if not self.enabled:
            return
        if step < self.config.start_step:
            self.reset()
            return
        torch._foreach_mul_(self.averages, self.config.decay)
        torch._foreach_add_(
            self.averages, [p.detach() for p in self.params], alpha=1.0 - self.config.decay
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Parameter name -> its average (the live tensors; ``torch.save`` copies them)."""
        return dict(zip(self.names, self.averages, strict=True))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.names) - set(state))
        if missing:
            raise KeyError(f"moving average lacks parameters {missing[:5]}")
        for name, average in zip(self.names, self.averages, strict=True):
            average.copy_(state[name])

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the parameters hold the averages; the weights come back after."""
        if not self.enabled:
            yield
            return
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.detach() for p in self.params], self.averages)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.params], saved)


def model_state(payload: dict[str, Any], path: Path, use_ema: bool) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint payload, with averaged parameters if ``use_ema``.

    Raises:
      CheckpointError: ``use_ema`` but the checkpoint at ``path`` holds no moving average.
    """
    if not use_ema:
        return payload["model"]
    if EMA_CHECKPOINT_KEY not in payload:
        raise CheckpointError(
            f"checkpoint {path} holds no moving average of the weights; train with "
            f"trainer.ema.decay > 0, or use the raw weights (--no-ema)"
        )
    return {**payload["model"], **payload[EMA_CHECKPOINT_KEY]}
