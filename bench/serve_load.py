#!/usr/bin/env python
"""Load test of ``seqlab serve``: throughput and p50/p99 latency at 1, 8 and 32 concurrent
clients, against the same inputs decoded one call at a time.

It starts ``seqlab serve`` on a free local port (a subprocess, default settings unless
given), sends the first ``--requests`` source sentences of the run's ``--split`` from N
clients at once (each client sends its next request when its last one is answered), bounded
by ``--requests`` and ``--time-limit`` per level, and checks every answer against the
sentence decoded alone. The baseline decodes the same sentences one ``Predictor.predict``
call each, in this process, before the server starts.

    python bench/serve_load.py --logdir runs/bible_en_es.transformer_small
    python bench/serve_load.py --logdir RUN --clients 1,8 --requests 64 \
        --serve-args="--batch-window-ms 10"

See docs/serving.md ("Load test").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--logdir", required=True, help="a trained translation run")
    p.add_argument("--split", default="test", help="whose source sentences are sent")
    p.add_argument("--requests", type=int, default=256, help="requests per level (at most)")
    p.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per level (at most)")
    p.add_argument("--serve-args", default="", help="extra arguments of seqlab serve")
    p.add_argument("--json", default="", help="also write the results to this file")
    return p.parse_args(argv)


def source_texts(logdir: Path, split: str, limit: int) -> list[str]:
    """The first ``limit`` source sentences of the run's ``split``."""
    from seqlab.train.config_changes import config_for_checkpoints
    from seqlab.train.run_context import build_context

    context = build_context(config_for_checkpoints(logdir, []), logdir, train_tokenizer=False)
    return list(context.data.examples(split).source_text[:limit])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def one_call_at_a_time(logdir: Path, texts: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Each text decoded by its own ``Predictor.predict`` call: outputs and timings."""
    from seqlab.export.predictor import Predictor

    predictor = Predictor.from_logdir(logdir)
    predictor.predict(texts[:1])  # warm-up
    outputs, latencies = [], []
    started = time.perf_counter()
    for text in texts:
        begun = time.perf_counter()
        outputs.append(predictor.predict([text])[0])
        latencies.append(time.perf_counter() - begun)
    seconds = time.perf_counter() - started
    return outputs, summary("one call at a time", 1, latencies, seconds, [1] * len(texts))


def summary(
    mode: str, clients: int, latencies: list[float], seconds: float, batch_sizes: list[int]
) -> dict[str, Any]:
    return {
        "mode": mode,
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "sentences_per_second": round(len(latencies) / seconds, 2),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "mean_batch_size": round(statistics.fmean(batch_sizes), 2),
    }


async def load(
    url: str, texts: list[str], expected: list[str], clients: int, time_limit: float
) -> tuple[dict[str, Any], int]:
    """``clients`` concurrent clients send ``texts`` in order; returns the summary and the
    number of answers that differ from the text decoded alone."""
    next_index = 0
    latencies: list[float] = []
    batch_sizes: list[int] = []
    mismatches = 0
    deadline = time.perf_counter() + time_limit

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal next_index, mismatches
        while next_index < len(texts) and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            begun = time.perf_counter()
            answer = await session.post(f"{url}/v1/translate", json={"text": texts[index]})
            latencies.append(time.perf_counter() - begun)
            answer.raise_for_status()
            body = answer.json()
            batch_sizes.append(body["batch_size"])
            mismatches += body["output"] != expected[index]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as session:
        warm_up = await session.post(f"{url}/v1/translate", json={"text": texts[0]})
        warm_up.raise_for_status()
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return summary("seqlab serve", clients, latencies, seconds, batch_sizes), mismatches


def start_server(logdir: Path, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "seqlab", "serve", "--logdir", str(logdir), "--port", "0"]
    process = subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"at (http://[^ ]+?)/ ", line)
    if not found:
        process.kill()
        raise SystemExit(f"seqlab serve did not start: {line!r}")
    return process, found.group(1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logdir = Path(args.logdir)
    texts = source_texts(logdir, args.split, args.requests)
    print(
        f"[bench] {len(texts)} sentences of {logdir} ({args.split}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs",
        flush=True,
    )
    expected, baseline = one_call_at_a_time(logdir, texts)
    rows = [baseline]
    print(f"[bench] {baseline}", flush=True)
    process, url = start_server(logdir, shlex.split(args.serve_args))
    try:
        for clients in [int(c) for c in args.clients.split(",") if c.strip()]:
            row, mismatches = asyncio.run(load(url, texts, expected, clients, args.time_limit))
            row["outputs_differing_from_alone"] = mismatches
            rows.append(row)
            print(f"[bench] {row}", flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    base = baseline["sentences_per_second"]
    print(
        "\n| mode | clients | requests | sentences/s | x one call at a time | p50 ms | p99 ms "
        "| mean batch | outputs differing |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['mode']} | {row['clients']} | {row['requests']} | "
            f"{row['sentences_per_second']} | {row['sentences_per_second'] / base:.2f} | "
            f"{row['p50_ms']} | {row['p99_ms']} | {row['mean_batch_size']} | "
            f"{row.get('outputs_differing_from_alone', '-')} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
