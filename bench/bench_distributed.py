#!/usr/bin/env python
"""Throughput and peak memory of seqlab training with 1 and 2 processes (torchrun, CPU/gloo):
one process, and two under each strategy (ddp, fsdp, tensor, pipeline).

Each configuration runs the real trainer (``seqlab.train.trainer.Trainer``) under
torchrun on the built-in Bible corpus, with the same global batch whatever the number of
processes; the machine's cores are split evenly between the processes. The first
``--warmup-steps`` steps are not timed. Prints a table (and writes JSON with ``--output``):
global tokens per second, seconds per step, and the peak resident memory of each process.

    python bench/bench_distributed.py                       # transformer_tiny, ~2 min
    python bench/bench_distributed.py --experiment mt.bible_en_es.transformer_small --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from seqlab.core.registry import get_experiment
from seqlab.data.mt_data import default_cache_dir
from seqlab.distributed.launch import torchrun_command
from seqlab.distributed.process_group import gather_objects
from seqlab.train.run_context import build_context
from seqlab.train.trainer import Trainer
from seqlab.train.world import world_from_env

# (processes, trainer.distributed.strategy)
CONFIGURATIONS = [(1, "none"), (2, "ddp"), (2, "fsdp"), (2, "tensor"), (2, "pipeline")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--experiment", default="mt.bible_en_es.transformer_tiny")
    p.add_argument("--steps", type=int, default=30, help="Training steps per configuration.")
    p.add_argument("--warmup-steps", type=int, default=5, help="Untimed steps at the start.")
    p.add_argument("--max-tokens", type=int, default=2048, help="Global batch (data.max_tokens).")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="Cores to split.")
    p.add_argument("--cache-dir", default=str(default_cache_dir()), help="Corpus cache.")
    p.add_argument("--output", default="", help="Also write the results as JSON here.")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # result file, under torchrun
    p.add_argument("--strategy", default="none", help=argparse.SUPPRESS)
    p.add_argument("--logdir", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def overrides(args: argparse.Namespace, strategy: str, threads: int) -> list[str]:
    sets = [
        f"data.cache_dir={args.cache_dir}",
        f"data.max_tokens={args.max_tokens}",
        f"trainer.max_steps={args.steps}",
        "trainer.checkpoint_every_steps=0",
        "trainer.checkpoint_every_seconds=1e9",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        f"trainer.log_every_steps={args.steps}",
        f"trainer.num_threads={threads}",
    ]
    if strategy != "none":
        sets.append(f"trainer.distributed.strategy={strategy}")
    return sets


# ---- worker (one per process, under torchrun) -------------------------------------------------
def run_worker(args: argparse.Namespace) -> None:
    world = world_from_env()
    threads = max(1, args.cores // world.world_size)
    config = get_experiment(args.experiment)
    config.apply_overrides(overrides(args, args.strategy, threads))
    trainer = Trainer(config, Path(args.logdir), show_progress=False)
    train_step = trainer.train_step
    marks: list[tuple[float, float]] = []  # (time after the step, global tokens of the step)

    def timed_step(indices: list[int] | None = None) -> dict[str, float]:
        metrics = train_step(indices)
        marks.append((time.perf_counter(), metrics["tokens"]))
        return metrics

    trainer.train_step = timed_step  # type: ignore[method-assign]
    trainer.train()
    timed = marks[args.warmup_steps - 1 :]
    seconds = timed[-1][0] - timed[0][0]
    tokens = sum(t for _, t in timed[1:])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks = gather_objects(peak_mb, world)
    if world.is_main:
        result = {
            "processes": world.world_size,
            "threads_per_process": threads,
            "timed_steps": len(timed) - 1,
            "tokens_per_second": tokens / seconds,
            "seconds_per_step": seconds / (len(timed) - 1),
            "peak_rss_mb_per_process": peaks,
        }
        Path(args.worker).write_text(json.dumps(result))


# ---- driver -------------------------------------------------------------------------------
def run_configuration(
    args: argparse.Namespace, nproc: int, strategy: str, workdir: Path
) -> dict[str, Any]:
    result_file = workdir / f"{nproc}-{strategy}.json"
    worker_args = ["--worker", str(result_file), "--strategy", strategy]
    logdir = workdir / f"logdir-{nproc}-{strategy}"
    command = torchrun_command(
        nproc, [__file__, *sys.argv[1:], *worker_args, "--logdir", str(logdir)]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.cores // nproc))}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return {"strategy": strategy, **json.loads(result_file.read_text())}


def print_table(results: list[dict[str, Any]]) -> None:
    base = results[0]["tokens_per_second"]
    print(
        f"{'processes':>9} {'strategy':>8} {'threads':>7} {'tokens/s':>9} {'vs 1':>5} "
        f"{'s/step':>7}  peak RSS per process (MB)"
    )
    for r in results:
        peaks = ", ".join(f"{m:.0f}" for m in r["peak_rss_mb_per_process"])
        print(
            f"{r['processes']:>9} {r['strategy']:>8} {r['threads_per_process']:>7} "
            f"{r['tokens_per_second']:>9.0f} {r['tokens_per_second'] / base:>5.2f} "
            f"{r['seconds_per_step']:>7.3f}  {peaks}"
        )


def main() -> None:
    args = parse_args()
    if args.worker:
        run_worker(args)
        return
    if args.warmup_steps < 1 or args.steps < args.warmup_steps + 2:
        raise SystemExit("need --warmup-steps >= 1 and --steps >= --warmup-steps + 2")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # Prepare the corpus and tokenizer once, outside the timed runs.
        config = get_experiment(args.experiment)
        config.apply_overrides(overrides(args, "none", args.cores))
        build_context(config, workdir / "prepare", train_tokenizer=True)
        results = [run_configuration(args, n, s, workdir) for n, s in CONFIGURATIONS]
    print(
        f"# {args.experiment}, global batch data.max_tokens={args.max_tokens}, "
        f"{args.steps - args.warmup_steps} timed steps; {args.cores} cores "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}, gloo"
    )
    print_table(results)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
