"""Run by torchrun in test_rank_failure: rank 1 raises in the middle of the work.

Usage:
  torchrun --nproc_per_node 2 rank_failure_worker.py collective
  torchrun --nproc_per_node 2 rank_failure_worker.py trainer LOGDIR OVERRIDE...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from seqlab.core.registry import get_experiment
from seqlab.distributed.process_group import all_reduce, init_process_group
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.trainer import Trainer

FAILING_STEP = 3


def fail_in_collectives() -> None:
    """Rank 0 keeps all-reducing; rank 1 raises at step 3 instead of joining."""
    world = init_process_group(ParallelismConfig())
    for step in range(1000):
        if world.rank == 1 and step == FAILING_STEP:
            raise RuntimeError(f"rank 1 failed on purpose at step {step}")
        all_reduce(torch.ones(4), world)


def fail_in_training(logdir: Path, overrides: list[str]) -> None:
    """The real trainer; rank 1's train_step raises at step 3 while rank 0 trains on."""
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(overrides)
    trainer = Trainer(config, logdir, show_progress=False)
    train_step = trainer.train_step

    def failing_on_rank_1(*args: Any) -> dict[str, float]:
        if trainer.world.rank == 1 and trainer.step == FAILING_STEP:
            raise RuntimeError(f"rank 1 failed on purpose at step {trainer.step}")
        return train_step(*args)

    trainer.train_step = failing_on_rank_1  # type: ignore[method-assign]
    trainer.train()


@record
def main() -> None:
    if sys.argv[1] == "collective":
        fail_in_collectives()
    else:
        fail_in_training(Path(sys.argv[2]), sys.argv[3:])


if __name__ == "__main__":
    main()
