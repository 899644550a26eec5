"""Every registered speech experiment builds, round-trips, and trains one step on audio."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from seqlab.core.config import Config
from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment, list_experiments
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.optim import LearningRateSchedule


@pytest.mark.parametrize("name", [n for n in list_experiments() if n.startswith("asr.")])
def test_asr_experiment_builds_and_trains_one_step(
    name: str, audio_batch: Callable[[ExperimentConfig], NestedMap]
) -> None:
    config = get_experiment(name)
    assert Config.from_dict(config.to_dict()).to_text() == config.to_text()
    torch.manual_seed(0)
    task = config.task.build()
    batch = audio_batch(config)
    schedule = LearningRateSchedule(config.trainer.schedule, config.trainer.max_steps)
    optimizer = config.trainer.optimizer.build(list(task.parameters()), lr=schedule(1))
    before = {k: v.clone() for k, v in task.state_dict().items()}
    loss, metrics = task.compute_loss(batch, task.compute_predictions(batch))
    assert torch.isfinite(loss)
    assert metrics["num_target_tokens"][0] == 17
    loss.backward()
    optimizer.step()
    changed = [k for k, v in task.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "one optimizer step changed no weight"
