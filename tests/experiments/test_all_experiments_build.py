"""Every registered experiment builds, prints, round-trips, and trains one step."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import Config
from seqlab.core.registry import get_experiment, list_experiments
from seqlab.data.mt_data import MTExamples, collate
from seqlab.models.multi_task import MultiTaskModel
from seqlab.train.optim import LearningRateSchedule


# Speech experiments take audio batches: tests/experiments/test_asr_experiments_build.py;
# language models packed text: tests/experiments/test_lm_experiments_build.py.
@pytest.mark.parametrize(
    "name", [n for n in list_experiments() if not n.startswith(("asr.", "lm."))]
)
def test_experiment_builds_and_trains_one_step(name: str) -> None:
    config = get_experiment(name)
    assert config.name == name
    assert Config.from_dict(config.to_dict()).to_text() == config.to_text()
    torch.manual_seed(0)
    task = config.task.build()
    # A multi-task experiment trains its first task here (the others share or mirror it).
    is_multi_task = isinstance(config.task, MultiTaskModel.Config)
    task_name = next(iter(config.task.tasks)) if is_multi_task else ""
    task_config = config.task.tasks[task_name] if is_multi_task else config.task
    data_config = config.data.tasks[task_name] if is_multi_task else config.data
    vocab = task_config.embedding.vocab_size
    assert data_config.tokenizer.vocab_size == vocab
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in (5, 9, 3)]
    examples = MTExamples(
        source_ids=[r + [3] for r in rows],
        target_ids=[r[::-1] for r in rows],
        source_text=["x"] * 3,
        target_text=["y"] * 3,
    )
    batch = collate(examples, [0, 1, 2])
    if is_multi_task:
        batch.task = task_name
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
