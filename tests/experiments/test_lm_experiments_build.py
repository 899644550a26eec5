"""Every registered language-model experiment builds, prints, round-trips, and trains one
step on a packed batch."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import Config
from seqlab.core.registry import get_experiment, list_experiments
from seqlab.data.lm_data import LMData, LMExamples
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID
from seqlab.train.optim import LearningRateSchedule


@pytest.mark.parametrize("name", [n for n in list_experiments() if n.startswith("lm.")])
def test_lm_experiment_builds_and_trains_one_step(name: str) -> None:
    config = get_experiment(name)
    assert Config.from_dict(config.to_dict()).to_text() == config.to_text()
    torch.manual_seed(0)
    task = config.task.build()
    vocab = config.task.embedding.vocab_size
    assert config.data.tokenizer.vocab_size == vocab
    generator = torch.Generator().manual_seed(0)
    lines = [torch.randint(4, vocab, (n,), generator=generator).tolist() for n in (5, 9, 3)]
    examples = LMExamples(
        input_ids=[[BOS_ID, *line] for line in lines],
        target_ids=[[*line, EOS_ID] for line in lines],
        line_of=[0, 1, 2],
        num_words=[2, 4, 1],
        texts=["a b", "c d e f", "g"],
        prompt_texts=["a", "c", "g"],
        reference_texts=["b", "d e f", ""],
        rows=[[0, 2], [1]],  # two lines packed into the first row
    )
    batch = LMData.collate(examples, [0, 1])
    schedule = LearningRateSchedule(config.trainer.schedule, config.trainer.max_steps)
    optimizer = config.trainer.optimizer.build(list(task.parameters()), lr=schedule(1))
    before = {k: v.clone() for k, v in task.state_dict().items()}
    loss, metrics = task.compute_loss(batch, task.compute_predictions(batch))
    assert torch.isfinite(loss)
    assert metrics["num_target_tokens"][0] == sum(len(line) + 1 for line in lines)
    loss.backward()
    optimizer.step()
    changed = [k for k, v in task.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "one optimizer step changed no weight"
