"""Every registered experiment builds, prints, round-trips, and trains one step."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import Config
from seqlab.core.registry import get_experiment, list_experiments
from seqlab.data.mt_data import MTExamples, collate
from seqlab.train.optim import LearningRateSchedule


@pytest.mark.parametrize("name", list_experiments())
def test_experiment_builds_and_trains_one_step(name: str) -> None:
    config = get_experiment(name)
    assert config.name == name
    assert Config.from_dict(config.to_dict()).to_text() == config.to_text()
    torch.manual_seed(0)
    task = config.task.build()
    vocab = config.task.embedding.vocab_size
    assert config.data.tokenizer.vocab_size == vocab
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in (5, 9, 3)]
    examples = MTExamples(
        source_ids=[r + [3] for r in rows],
        target_ids=[r[::-1] for r in rows],
        source_text=["x"] * 3,
        target_text=["y"] * 3,
    )
    batch = collate(examples, [0, 1, 2])
    schedule = LearningRateSchedule(config.trainer.schedule, config.trainer.max_steps)
    optimizer = config.trainer.optimizer.build(list(task.parameters()), lr=schedule(1))
    before = {k: v.clone() for k, v in task.state_dict().items()}
    loss, metrics = task.compute_loss(batch, task.compute_predictions(batch))
    assert torch.isfinite(loss)
    assert metrics["num_target_tokens"][0] == sum(len(r) + 1 for r in rows)
    loss.backward()
    optimizer.step()
    changed = [k for k, v in task.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "one optimizer step changed no weight"
