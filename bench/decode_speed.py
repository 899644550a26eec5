#!/usr/bin/env python
"""Decoding speed against CTranslate2 at both model widths and both thread counts, in one run.

For each width (256: the README main job's ``transformer_small``, 3+3 layers; 512: the base
shape, 6+6 layers; both with an 8000-piece vocabulary, random weights) and each thread count,
``bench/run_all.py``'s decode comparison runs: 16 sentences of 20-40 source tokens, 64 decoder
steps each, both engines forced to the same length, the same weights converted by seqlab's own
CTranslate2 converter, repetitions alternating seqlab and CTranslate2:

- beam-4 and greedy decoding in float32 against CTranslate2 float32 (target >= 1.0x);
- int8 beam-4 (``seqlab.quant.ptq.quantize_int8``) against CTranslate2 int8 (target >= 0.9x).

    python bench/decode_speed.py                        # about 10 min on a quiet 2-core machine
    python bench/decode_speed.py --widths 256 --threads 1 --reps 3
    python bench/decode_speed.py --profile --widths 256 --threads 1   # plus profiler tables

See docs/benchmarks.md ("Decoding speed at both widths").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from input_pipeline import prepared_data  # noqa: E402
from run_all import BASE, DECODE_RATIOS, TARGETS, Bench, environment  # noqa: E402

from seqlab.core.registry import get_experiment  # noqa: E402

WIDTHS = {
    256: dataclasses.replace(
        BASE,
        experiment="mt.bible_en_es.transformer_small",
        overrides=("task.embedding.vocab_size=8000", "data.tokenizer.vocab_size=8000"),
    ),
    512: BASE,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--widths", default="256,512", help="Comma-separated: 256, 512.")
    p.add_argument("--threads", default="1,2", help="Comma-separated thread counts.")
    p.add_argument("--only", default=",".join(DECODE_RATIOS), help="Subset of beam,greedy,int8.")
    p.add_argument("--reps", type=int, default=5, help="Timed repetitions per side.")
    p.add_argument("--warmup", type=int, default=1, help="Untimed runs per side.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the weights and batches.")
    p.add_argument("--profile", action="store_true", help="Print torch.profiler tables.")
    p.add_argument("--profile-rows", type=int, default=15, help="Ops per profile table.")
    p.add_argument("--output", default=None, help="Also write everything as JSON here.")
    args = p.parse_args(argv)
    args.width_list = [int(w) for w in args.widths.split(",") if w.strip()]
    args.thread_list = [int(t) for t in args.threads.split(",") if t.strip()]
    args.ratios = [r.strip() for r in args.only.split(",") if r.strip()]
    for width in args.width_list:
        if width not in WIDTHS:
            p.error(f"--widths: {width} is not one of {sorted(WIDTHS)}")
    for ratio in args.ratios:
        if ratio not in DECODE_RATIOS:
            p.error(f"--only: {ratio!r} is not one of {', '.join(DECODE_RATIOS)}")
    return args


def run_one(args: argparse.Namespace, width: int, threads: int) -> dict[str, Any]:
    """run_all's decode comparison at one width and thread count."""
    shape = dataclasses.replace(WIDTHS[width], reps=args.reps, warmup=args.warmup)
    torch.set_num_threads(threads)
    experiment = get_experiment(shape.experiment)
    experiment.apply_overrides(list(shape.overrides))
    torch.manual_seed(args.seed)
    task = experiment.task.build()
    bench_args = argparse.Namespace(
        shape=shape,
        ratios=args.ratios,
        threads=threads,
        clock="wall",
        seed=args.seed,
        profile=args.profile,
        profile_rows=args.profile_rows,
        started=args.started,
    )
    bench = Bench(args=bench_args, experiment=experiment, task=task)
    bench.log(f"width {width}, {threads} thread(s): {shape.experiment}")
    bench.decode(prepared_data(experiment.data).tokenizer)
    return {"results": bench.results, "profiles": bench.profiles}


def print_table(runs: dict[tuple[int, int], dict[str, Any]], ratios: list[str]) -> None:
    rows = [["width", "threads", "ratio", "seqlab tok/s", "CTranslate2 tok/s", "x", "target"]]
    for (width, threads), run in runs.items():
        for name in ratios:
            r = run["results"][name]
            target = TARGETS[name][1]
            met = "yes" if r["ratio"] >= target else "no"
            rows.append(
                [
                    str(width),
                    str(threads),
                    TARGETS[name][0],
                    f"{r['seqlab']['tokens_per_s']:.0f}",
                    f"{r['peer']['tokens_per_s']:.0f}",
                    f"{r['ratio']:.2f}",
                    f">= {target:g} ({met})",
                ]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("Medians over the repetitions; tok/s = sentences x decoder steps / time.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = time.perf_counter()
    env_before = environment(argparse.Namespace(threads=args.threads, retain_heap=False))
    print(
        f"torch {env_before['torch']}, ctranslate2 {env_before['ctranslate2']}; "
        f"{env_before['cpu']}; load average {env_before['load_average'][0]:.1f}",
        flush=True,
    )
    runs = {}
    for width in args.width_list:
        for threads in args.thread_list:
            runs[(width, threads)] = run_one(args, width, threads)
    print_table(runs, args.ratios)
    env_after = environment(argparse.Namespace(threads=args.threads, retain_heap=False))
    print(
        f"load average before {env_before['load_average'][0]:.1f}, after "
        f"{env_after['load_average'][0]:.1f}"
    )
    if args.output:
        out = {
            "environment": {"before": env_before, "after": env_after},
            "runs": {f"width{w}_threads{t}": run for (w, t), run in runs.items()},
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
