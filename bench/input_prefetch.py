#!/usr/bin/env python
"""Training tokens/s with batches collated ahead on a thread, and on the training thread.

Runs ``Trainer(...).train()`` of an experiment for ``--steps`` steps once per setting of
``trainer.prefetch_batches`` in ``--order`` (alternate them on a quiet machine), with the heap
retained as the ``seqlab`` command does, and prints the mean tokens/s and data_wait of the
log windows after the first.

    python bench/input_prefetch.py --cache-dir ~/.cache/seqlab --order 2,0,2,0
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.core.heap_retention import retain_freed_heap_memory
from seqlab.core.registry import get_experiment
from seqlab.train.trainer import Trainer


def run(experiment: str, cache_dir: str, prefetch: int, steps: int, log_every: int) -> None:
    logdir = Path(tempfile.mkdtemp(prefix=f"prefetch{prefetch}-"))
    try:
        config = get_experiment(experiment)
        config.apply_overrides(
            [
                *([f"data.cache_dir={cache_dir}"] if cache_dir else []),
                f"trainer.max_steps={steps}",
                "trainer.checkpoint_every_steps=0",
                "trainer.checkpoint_every_seconds=1e9",
                "trainer.eval_every_steps=0",
                "trainer.decode_every_steps=0",
                f"trainer.log_every_steps={log_every}",
                f"trainer.prefetch_batches={prefetch}",
            ]
        )
        Trainer(config, logdir, show_progress=False).train()
        events = EventAccumulator(str(logdir / "train"))
        events.Reload()
        rates = [e.value for e in events.Scalars("tokens_per_second")][1:]
        waits = [e.value for e in events.Scalars("data_wait_fraction")][1:]
        print(
            f"prefetch_batches={prefetch}: {sum(rates) / len(rates):,.0f} tokens/s "
            f"(windows {[round(r) for r in rates]}), data_wait "
            f"{100 * sum(waits) / len(waits):.2f}%",
            flush=True,
        )
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="mt.bible_en_es.transformer_small")
    parser.add_argument("--cache-dir", default="", help="data.cache_dir (default: seqlab's)")
    parser.add_argument("--order", default="2,0,2,0", help="prefetch_batches of each run")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--log-every", type=int, default=20)
    args = parser.parse_args()
    retain_freed_heap_memory()
    for prefetch in (int(x) for x in args.order.split(",")):
        run(args.experiment, args.cache_dir, prefetch, args.steps, args.log_every)


if __name__ == "__main__":
    main()
