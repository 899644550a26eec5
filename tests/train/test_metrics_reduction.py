"""Metrics over many batches: weighted means, except counts (``num_*``), which are totals, in
the evaler and in the trainer's reduction over accumulated batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.evaler import evaluate
from seqlab.train.metrics_accumulator import MetricsAccumulator, reduce_metric
from seqlab.train.trainer import Trainer


def test_counts_are_totalled_and_other_metrics_averaged() -> None:
    accumulator = MetricsAccumulator()
    accumulator.add({"loss": (2.0, 10.0), "num_target_tokens": (10.0, 1.0)})
    accumulator.add({"loss": (4.0, 30.0), "num_target_tokens": (30.0, 1.0)})
    accumulator.add({"en_es/num_target_tokens": (7.0, 1.0)})
    assert accumulator.results() == {
        "loss": (2.0 * 10 + 4.0 * 30) / 40,
        "num_target_tokens": 40.0,
        "en_es/num_target_tokens": 7.0,
    }
    # A rank without examples weighs 0: nothing to its total, and a mean of nothing is 0.
    assert reduce_metric("num_target_tokens", 0.0, 0.0) == 0.0
    assert reduce_metric("loss", 0.0, 0.0) == 0.0


@pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)
def test_num_target_tokens_is_the_total_of_the_dataset_and_of_the_update(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    trainer = tiny_mt_trainer(
        tmp_path, "data.eval_limit=24", "data.eval_max_tokens=256", "trainer.grad_accum_steps=3"
    )
    data, examples = trainer.data, trainer.data.examples("dev")
    batches = list(data.eval_batches(examples))
    assert len(batches) > 1
    targets = sum(
        float((1 - data.collate(examples, indices).tgt_paddings).sum()) for indices in batches
    )
    assert targets == sum(len(ids) + 1 for ids in examples.target_ids)  # each with its EOS
    assert evaluate(trainer.context, "dev", show_progress=False)["num_target_tokens"] == targets

    updates = [next(trainer.stream) for _ in range(3)]
    trainer.stream.load_state_dict({"epoch": 0, "index": 0})
    metrics = trainer.train_step(next(trainer.stream))
    update_targets = sum(
        float((1 - data.collate(trainer.examples, indices).tgt_paddings).sum())
        for indices in updates
    )
    assert metrics["num_target_tokens"] == update_targets
