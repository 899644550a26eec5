"""Every registered speech experiment builds, round-trips, and trains one step on audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqlab.core.config import Config
from seqlab.core.registry import get_experiment, list_experiments
from seqlab.data.asr_data import batch_from_waveforms
from seqlab.train.optim import LearningRateSchedule


@pytest.mark.parametrize("name", [n for n in list_experiments() if n.startswith("asr.")])
def test_asr_experiment_builds_and_trains_one_step(name: str) -> None:
    config = get_experiment(name)
    assert Config.from_dict(config.to_dict()).to_text() == config.to_text()
    torch.manual_seed(0)
    task = config.task.build()
    vocab = config.task.vocab_size
    assert config.data.tokenizer.vocab_size == vocab
    rng = np.random.default_rng(0)
    rate = config.data.sample_rate
    waveforms = [rng.normal(0, 0.1, int(rate * s)).astype(np.float32) for s in (0.6, 1.0, 0.3)]
    labels = [rng.integers(4, vocab, n).tolist() for n in (5, 9, 3)]
    batch = batch_from_waveforms(waveforms, labels, ["x"] * 3, ["a", "b", "c"], [0, 1, 2], rate)
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
