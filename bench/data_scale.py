#!/usr/bin/env python
"""Data at research scale (issue 16): shards, second start, memory and input rate at 1M-5M pairs.

Writes synthetic parallel corpora of N pairs from the prepared Bible data (each pair two
seeded, randomly chosen training verses joined: source = src1 + " " + src2, target = tgt1 +
" " + tgt2; about 129 tokens per pair at a vocabulary of 8000), then for each size trains
``mt.bible_en_es.transformer_tiny`` pointed at that file as the README's "Your own data"
says (``data.corpus=`` and ``data.{train,dev,test}_path``), with one thread, and measures:

a. shard building (a first start, in its own process, on an empty cache): the content hash,
   the SentencePiece tokenizer and the shards, each timed; pairs/s and tokens/s; the shard
   set's size on disk; the peak resident memory of the building process and of its workers;
b. a second start (everything cached, a new logdir): a fresh process that builds the
   ``Trainer`` and trains ``--steps`` steps; seconds from launching the process (and from
   constructing the Trainer) to the end of the first step, its peak resident memory, training
   tokens/s and data_wait_fraction from its TensorBoard summaries;
c. the same under torchrun with 2 processes: each rank's peak memory, and how much the
   second process adds;
d. the input pipeline alone (the trainer's batch stream and ``collate``) for
   ``--pipeline-seconds``: real tokens/s, against the training tokens/s of b.

Prints the results and the issue's targets (set for 5M pairs) as met / not met.

    python bench/data_scale.py --work /data/scale --output scale.json        # 1M and 5M
    python bench/data_scale.py --work /tmp/s --pairs 20000,50000 --steps 5   # a rehearsal
    python bench/data_scale.py --work /data/scale --pairs 40000000 --write-only
    python bench/data_scale.py --work /data/scale --pairs 1000000,40000000 --streaming \
        --nproc 1 --steps 200                    # memory against corpus size, streaming

With ``--streaming`` the first start computes only the content hash and the tokenizer, and
the second starts train with ``data.streaming=true``: the memory they take should not grow
with the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EXPERIMENT = "mt.bible_en_es.transformer_tiny"
MB = 1 << 20
GIB = 1 << 30
# The targets, for 5M pairs on 2 cores and 24 GB.
BUILD_SECONDS = 600.0
SHARD_BYTES = 1e9
SECOND_START_SECONDS = 15.0
PEAK_RSS_BYTES = 2 * GIB
SECOND_PROCESS_BYTES = 1 * GIB
PIPELINE_RATIO = 20.0
DATA_WAIT = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--work", default="", help="Directory for corpora, caches and runs.")
    p.add_argument("--pairs", default="1000000,5000000", help="Comma-separated corpus sizes.")
    p.add_argument("--write-only", action="store_true", help="Only write the corpora.")
    p.add_argument(
        "--measure-max-pairs",
        type=int,
        default=10_000_000,
        help="Larger corpora are only written (the 40M one is for the streaming mode).",
    )
    p.add_argument("--bible-tsv", default="", help="Prepared Bible train.tsv (dev/test beside).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the verse recombination.")
    p.add_argument("--experiment", default=EXPERIMENT)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--steps", type=int, default=50, help="Training steps of each second start.")
    p.add_argument("--nproc", default="1,2", help="Process counts of the second starts.")
    p.add_argument(
        "--build-workers", type=int, default=0, help="data.num_workers (0 = one per core)."
    )
    p.add_argument("--pipeline-seconds", type=float, default=10.0)
    p.add_argument(
        "--streaming",
        action="store_true",
        help="Train in streaming mode (data.streaming) instead of from shards; no size limit.",
    )
    p.add_argument("--stream-window", type=int, default=100_000, help="data.stream_window.")
    p.add_argument("--set", action="append", default=[], help="Extra config override.")
    p.add_argument("--output", default="", help="Also write the results as JSON here.")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # build | train
    p.add_argument("--spec", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- memory ---------------------------------------------------------------------------------
def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident memory (Linux reports kilobytes); for RUSAGE_CHILDREN, that of the
    largest child waited for."""
    return resource.getrusage(who).ru_maxrss * 1024


def proc_status_bytes() -> dict[str, int]:
    """This process's current VmRSS, RssAnon, RssFile and VmHWM (peak) from /proc."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


# ---- synthetic corpora ------------------------------------------------------------------------
def bible_files(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """The Bible train/dev/test TSVs: ``--bible-tsv`` and its neighbours, or prepared into
    the work directory by ``seqlab data prepare``."""
    if args.bible_tsv:
        train = Path(args.bible_tsv)
        files = {
            "train": train,
            "dev": train.with_name("dev.tsv"),
            "test": train.with_name("test.tsv"),
        }
    else:
        cache = work / "bible_cache"
        command = [sys.executable, "-m", "seqlab", "data", "prepare", "bible_en_es"]
        out = subprocess.run(
            [*command, "--cache-dir", str(cache)], check=True, capture_output=True, text=True
        ).stdout
        files = {}
        for line in out.splitlines():  # "bible_en_es train: PATH"
            head, _, path = line.partition(": ")
            if head.startswith("bible_en_es "):
                files[head.split()[1]] = Path(path)
    missing = [
        f"{k} ({files.get(k)})"
        for k in ("train", "dev", "test")
        if not files.get(k, Path()).is_file()
    ]
    if missing:
        raise SystemExit(f"Bible files not found: {', '.join(missing)}")
    return files


def write_synthetic(bible_train: Path, pairs: int, seed: int, out: Path) -> dict[str, Any]:
    """Writes ``pairs`` recombined verse pairs to ``out`` (kept if already there), streamed in
    blocks: only the Bible pairs and one block of lines are in memory."""
    from seqlab.data.token_shards import iter_pairs

    if out.is_file():
        return {"path": str(out), "bytes": out.stat().st_size, "write_seconds": None}
    verses = list(iter_pairs(bible_train))
    sources = [s for s, _ in verses]
    targets = [t for _, t in verses]
    mean_line = sum(len(s) + len(t) + 2 for s, t in verses) / len(verses)
    need = 2 * mean_line * pairs * 1.05
    free = shutil.disk_usage(out.parent).free
    if free < need:
        raise SystemExit(f"{out}: needs about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
    rng = np.random.default_rng([seed, pairs])
    tmp = out.with_name(out.name + ".tmp")
    start = time.perf_counter()
    block = 100_000
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for first in range(0, pairs, block):
            picks = rng.integers(0, len(verses), size=(min(block, pairs - first), 2)).tolist()
            f.write(
                "".join(f"{sources[a]} {sources[b]}\t{targets[a]} {targets[b]}\n" for a, b in picks)
            )
            if pairs >= 10_000_000 and (first // block) % 50 == 0:
                print(f"# {out.name}: {first:,} / {pairs:,} pairs", file=sys.stderr)
    os.replace(tmp, out)
    return {
        "path": str(out),
        "bytes": out.stat().st_size,
        "write_seconds": time.perf_counter() - start,
    }


# ---- workers: each in its own process, as a user's `seqlab train` would be ----------------
def load_config(spec: dict[str, Any]) -> Any:
    from seqlab.core.registry import get_experiment

    config = get_experiment(spec["experiment"])
    config.apply_overrides(spec["overrides"])
    return config


def worker_build(spec: dict[str, Any]) -> None:
    """A first start: the content hash, the tokenizer and the shards, timed one by one."""
    from seqlab.core.heap_retention import retain_freed_heap_memory

    retain_freed_heap_memory()  # as the `seqlab` command line does
    from seqlab.data.shard_cache import file_fingerprint

    data = load_config(spec).data.build()
    train = data.paths()["train"]
    t0 = time.perf_counter()
    file_fingerprint(train, data.cache_dir / "shards")
    t1 = time.perf_counter()
    data.load_tokenizer()
    t2 = time.perf_counter()
    peak_after_tokenizer = peak_rss_bytes()
    if data.config.streaming:  # nothing more is built up front
        result = {
            "hash_seconds": t1 - t0,
            "tokenizer_seconds": t2 - t1,
            "peak_rss": peak_rss_bytes(),
        }
        Path(spec["result"]).write_text(json.dumps(result))
        return
    examples = data.examples("train")
    t3 = time.perf_counter()
    shards = examples.shards
    tokens = int(shards.lengths["src"].sum()) + int(shards.lengths["tgt"].sum())
    result = {
        "hash_seconds": t1 - t0,
        "tokenizer_seconds": t2 - t1,
        "shard_seconds": t3 - t2,
        "pairs": len(shards),
        "tokens": tokens,
        "encoding": shards.manifest.get("encoding", "?"),
        "blank_lines": int(shards.manifest.get("blank_lines", 0)),
        "too_long": int(examples.num_too_long),
        "shard_dir": str(shards.directory),
        "shard_bytes": sum(f.stat().st_size for f in shards.directory.iterdir()),
        "tokenizer_bytes": Path(data.tokenizer_path).stat().st_size,
        "peak_rss_after_tokenizer": peak_after_tokenizer,
        "peak_rss": peak_rss_bytes(),
        "peak_rss_largest_worker": peak_rss_bytes(resource.RUSAGE_CHILDREN),
    }
    Path(spec["result"]).write_text(json.dumps(result))


def worker_train(spec: dict[str, Any]) -> None:
    """A second start: Trainer, ``steps`` steps, then (one process) the input pipeline."""
    imports_start = time.time()
    from seqlab.core.heap_retention import retain_freed_heap_memory

    retain_freed_heap_memory()
    from seqlab.core.registry import get_experiment
    from seqlab.train.trainer import Trainer, batch_tokens
    from seqlab.train.world import world_from_env

    imported = time.time()
    world = world_from_env()
    config = load_config(spec)
    constructing = time.time()
    trainer = Trainer(
        config, Path(spec["logdir"]), show_progress=False, preset=get_experiment(spec["experiment"])
    )
    constructed = time.time()
    marks: list[tuple[float, float]] = []  # (time after the step, global tokens of the step)
    train_step = trainer.train_step

    def timed_step(indices: list[int] | None = None) -> dict[str, float]:
        metrics = train_step(indices)
        marks.append((time.time(), metrics["tokens"]))
        return metrics

    trainer.train_step = timed_step  # type: ignore[method-assign]
    trainer.train()
    result: dict[str, Any] = {
        "rank": world.rank,
        "launch": spec["launch"],
        "imports_start": imports_start,
        "imported": imported,
        "trainer_start": constructing,
        "trainer_built": constructed,
        "first_step_end": marks[0][0],
        "steps": len(marks),
        "peak_rss": peak_rss_bytes(),
        "status_after_training": proc_status_bytes(),
        "examples": len(trainer.examples),
    }
    if len(marks) > 1:  # steps 2..N, as the trainer counts tokens (global, real)
        result["steady_tokens_per_second"] = sum(t for _, t in marks[1:]) / (
            marks[-1][0] - marks[0][0]
        )
    if spec.get("pipeline_seconds", 0) > 0 and world.world_size == 1:
        data, examples, stream = trainer.data, trainer.examples, trainer.stream
        start = time.perf_counter()
        indices = next(stream)  # plans the epoch (train() left the stream to be re-planned)
        plan_seconds = time.perf_counter() - start
        data.collate(examples, indices)
        tokens = 0.0
        batches = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < spec["pipeline_seconds"]:
            tokens += batch_tokens(data.collate(examples, next(stream)))
            batches += 1
        result["pipeline"] = {
            "tokens_per_second": tokens / elapsed,
            "batches": batches,
            "seconds": elapsed,
            "plan_seconds": plan_seconds,
        }
    Path(f"{spec['result']}.rank{world.rank}").write_text(json.dumps(result))


# ---- driver ---------------------------------------------------------------------------------
def run_logged(command: list[str], log: Path, env: dict[str, str]) -> None:
    with log.open("w") as f:
        done = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); {log}:\n{tail}")


def worker_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def overrides(
    args: argparse.Namespace, corpus: Path, bible: dict[str, Path], cache: Path
) -> list[str]:
    log_every = max(1, args.steps // 5)
    return [
        "data.corpus=",
        f"data.train_path={corpus}",
        f"data.dev_path={bible['dev']}",
        f"data.test_path={bible['test']}",
        f"data.tokenizer.vocab_size={args.vocab_size}",
        f"task.embedding.vocab_size={args.vocab_size}",
        f"data.cache_dir={cache}",
        f"data.num_workers={args.build_workers}",
        "trainer.num_threads=1",
        f"trainer.max_steps={args.steps}",
        f"trainer.log_every_steps={log_every}",
        "trainer.checkpoint_every_steps=0",
        "trainer.checkpoint_every_seconds=1e9",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        *args.set,
    ]


def train_scalars(event_dir: Path) -> dict[str, Any]:
    """tokens/s (median of the log windows after the first, which holds the start-up) and
    data_wait_fraction (mean over the same windows) from the run's TensorBoard summaries."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_dir))
    events.Reload()
    rates = [e.value for e in events.Scalars("tokens_per_second")]
    waits = [e.value for e in events.Scalars("data_wait_fraction")]
    steady_rates, steady_waits = rates[1:] or rates, waits[1:] or waits
    return {
        "tokens_per_second": float(np.median(steady_rates)),
        "data_wait_fraction": float(np.mean(steady_waits)),
        "tokens_per_second_windows": rates,
        "data_wait_fraction_windows": waits,
    }


def second_start(
    args: argparse.Namespace, base: dict[str, Any], run_dir: Path, nproc: int
) -> dict[str, Any]:
    logdir = run_dir / f"logdir-{nproc}"
    shutil.rmtree(logdir, ignore_errors=True)
    result = run_dir / f"train-{nproc}.json"
    spec_path = run_dir / f"train-{nproc}.spec.json"
    program = [__file__, "--worker", "train", "--spec", str(spec_path)]
    if nproc == 1:
        command = [sys.executable, *program]
    else:
        from seqlab.distributed.launch import torchrun_command

        command = torchrun_command(nproc, program)
    spec = {
        **base,
        "logdir": str(logdir),
        "result": str(result),
        "pipeline_seconds": args.pipeline_seconds if nproc == 1 else 0,
        "launch": time.time(),
    }
    spec_path.write_text(json.dumps(spec))
    run_logged(command, run_dir / f"train-{nproc}.log", worker_env())
    ranks = [json.loads(Path(f"{result}.rank{r}").read_text()) for r in range(nproc)]
    main = ranks[0]
    out: dict[str, Any] = {
        "nproc": nproc,
        "start_to_first_step_seconds": max(r["first_step_end"] for r in ranks) - spec["launch"],
        "trainer_to_first_step_seconds": main["first_step_end"] - main["trainer_start"],
        "launch_to_imports_seconds": main["imports_start"] - spec["launch"],
        "imports_seconds": main["imported"] - main["imports_start"],
        "trainer_init_seconds": main["trainer_built"] - main["trainer_start"],
        "peak_rss_per_process": [r["peak_rss"] for r in ranks],
        "status_after_training": [r["status_after_training"] for r in ranks],
        "steady_tokens_per_second_own_clock": main.get("steady_tokens_per_second"),
        "examples": main["examples"],
        **train_scalars(logdir / "train"),
    }
    if "pipeline" in main:
        out["pipeline"] = main["pipeline"]
    return out


def first_start(base: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Runs the build worker (a first start) in its own process; its results."""
    spec_path = run_dir / "build.spec.json"
    spec_path.write_text(json.dumps({**base, "result": str(run_dir / "build.json")}))
    started = time.perf_counter()
    command = [sys.executable, __file__, "--worker", "build", "--spec", str(spec_path)]
    run_logged(command, run_dir / "build.log", worker_env())
    build = json.loads((run_dir / "build.json").read_text())
    build["process_seconds"] = time.perf_counter() - started
    return build


def measure_streaming(
    args: argparse.Namespace, corpus: dict[str, Any], bible: dict[str, Path], run_dir: Path
) -> dict[str, Any]:
    """Streaming mode: a first start (content hash and tokenizer, nothing else is built),
    then training from the text file a window at a time."""
    cache = run_dir / "cache"
    run_dir.mkdir(parents=True, exist_ok=True)
    streaming = ["data.streaming=true", f"data.stream_window={args.stream_window}"]
    base = {
        "experiment": args.experiment,
        "overrides": overrides(args, Path(corpus["path"]), bible, cache) + streaming,
    }
    build = first_start(base, run_dir)
    runs = [second_start(args, base, run_dir, int(n)) for n in args.nproc.split(",")]
    return {"corpus": corpus, "build": build, "train": runs, "streaming": True}


def measure_size(
    args: argparse.Namespace, corpus: dict[str, Any], bible: dict[str, Path], run_dir: Path
) -> dict[str, Any]:
    cache = run_dir / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # a first start: nothing cached
    run_dir.mkdir(parents=True, exist_ok=True)
    base = {
        "experiment": args.experiment,
        "overrides": overrides(args, Path(corpus["path"]), bible, cache),
    }
    build = first_start(base, run_dir)
    build["total_seconds"] = (
        build["hash_seconds"] + build["tokenizer_seconds"] + build["shard_seconds"]
    )
    build["pairs_per_second"] = build["pairs"] / build["shard_seconds"]
    build["tokens_per_second"] = build["tokens"] / build["shard_seconds"]
    runs = [second_start(args, base, run_dir, int(n)) for n in args.nproc.split(",")]
    return {"corpus": corpus, "build": build, "train": runs}


# ---- report ---------------------------------------------------------------------------------
def targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; met None where the measurement is missing."""
    build = result["build"]
    runs = {r["nproc"]: r for r in result["train"]}
    one, two = runs.get(1), runs.get(2)
    rows: list[tuple[str, str, bool | None]] = [
        (
            "shard building (hash + tokenizer + shards) < 10 min",
            f"{build['total_seconds']:.0f} s",
            build["total_seconds"] < BUILD_SECONDS,
        ),
        (
            "shards on disk < 1 GB",
            f"{build['shard_bytes'] / 1e6:.0f} MB",
            build["shard_bytes"] < SHARD_BYTES,
        ),
    ]
    if one:
        rows.append(
            (
                "second start to first step < 15 s",
                f"{one['start_to_first_step_seconds']:.1f} s",
                one["start_to_first_step_seconds"] < SECOND_START_SECONDS,
            )
        )
    peaks = [p for r in (one, two) if r for p in r["peak_rss_per_process"]]
    rows.append(
        (
            "training peak RSS < 2 GiB per process",
            ", ".join(f"{p / MB:.0f}" for p in peaks) + " MB",
            max(peaks) < PEAK_RSS_BYTES,
        )
    )
    if one and two:
        added = sum(two["peak_rss_per_process"]) - one["peak_rss_per_process"][0]
        rows.append(
            (
                "--nproc 2: second process adds < 1 GiB",
                f"{added / MB:.0f} MB",
                added < SECOND_PROCESS_BYTES,
            )
        )
    if one and "pipeline" in one:
        ratio = one["pipeline"]["tokens_per_second"] / one["tokens_per_second"]
        rows.append(
            ("input pipeline >= 20x training tokens/s", f"{ratio:.1f}x", ratio >= PIPELINE_RATIO)
        )
    waits = [r["data_wait_fraction"] for r in (one, two) if r]
    if waits:
        rows.append(
            (
                "data_wait < 2%",
                ", ".join(f"{w:.2%}" for w in waits),
                max(waits) < DATA_WAIT,
            )
        )
    return rows


def print_training(result: dict[str, Any]) -> None:
    for r in result["train"]:
        peaks = ", ".join(f"{p / MB:.0f}" for p in r["peak_rss_per_process"])
        print(
            f"  second start x{r['nproc']}    first step {r['start_to_first_step_seconds']:.1f} s "
            f"after launch ({r['trainer_to_first_step_seconds']:.1f} s after Trainer(); imports "
            f"{r['imports_seconds']:.1f} s, Trainer() {r['trainer_init_seconds']:.1f} s); "
            f"{r['tokens_per_second']:,.0f} tokens/s, data_wait {r['data_wait_fraction']:.2%}, "
            f"peak RSS {peaks} MB"
        )
        if "pipeline" in r:
            p = r["pipeline"]
            print(
                f"  input pipeline     {p['tokens_per_second']:,.0f} tokens/s "
                f"({p['tokens_per_second'] / r['tokens_per_second']:.1f}x training; "
                f"{p['batches']:,} batches; first batch {p['plan_seconds']:.2f} s)"
            )


def print_streaming(pairs: int, result: dict[str, Any]) -> None:
    c, b = result["corpus"], result["build"]
    print(f"\n== {pairs:,} pairs, streaming: {c['bytes'] / 1e6:,.0f} MB of text ==")
    print(
        f"  first start        hash {b['hash_seconds']:.1f} s + tokenizer "
        f"{b['tokenizer_seconds']:.1f} s; peak RSS {b['peak_rss'] / MB:.0f} MB"
    )
    print_training(result)


def print_result(pairs: int, result: dict[str, Any]) -> None:
    if result.get("streaming"):
        print_streaming(pairs, result)
        return
    c, b = result["corpus"], result["build"]
    print(
        f"\n== {pairs:,} pairs: {c['bytes'] / 1e6:.0f} MB of text, "
        f"{b['tokens'] / b['pairs']:.1f} tokens/pair, {b['too_long']:,} over data.max_length =="
    )
    print(
        f"  shard building     hash {b['hash_seconds']:.1f} s + tokenizer "
        f"{b['tokenizer_seconds']:.1f} s + shards {b['shard_seconds']:.1f} s "
        f"= {b['total_seconds']:.1f} s; "
        f"{b['pairs_per_second']:,.0f} pairs/s, {b['tokens_per_second']:,.0f} tokens/s"
    )
    print(
        f"  shards on disk     {b['shard_bytes'] / 1e6:.1f} MB ({b['encoding']}), "
        f"tokenizer {b['tokenizer_bytes'] / 1e3:.0f} kB"
    )
    print(
        f"  building peak RSS  {b['peak_rss'] / MB:.0f} MB (after the tokenizer "
        f"{b['peak_rss_after_tokenizer'] / MB:.0f} MB); largest worker "
        f"{b['peak_rss_largest_worker'] / MB:.0f} MB"
    )
    print_training(result)
    print("  targets (set for 5M pairs):")
    for name, value, met in targets(result):
        verdict = "n/a" if met is None else ("met" if met else "NOT MET")
        print(f"    {name:<52} {value:>18}  {verdict}")


def run(args: argparse.Namespace) -> None:
    if not args.work:
        raise SystemExit("--work DIR is required (corpora, caches and runs go there)")
    work = Path(args.work).resolve()
    (work / "corpora").mkdir(parents=True, exist_ok=True)
    sizes = [int(x.replace("_", "")) for x in args.pairs.split(",") if x.strip()]
    bible = bible_files(args, work)
    print(f"# Bible: {bible['train']}", flush=True)
    report: dict[str, Any] = {
        "args": vars(args),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "bible": {k: str(v) for k, v in bible.items()},
        "sizes": {},
    }
    for pairs in sizes:
        name = f"bible2x-{pairs}-seed{args.seed}.tsv"
        corpus = write_synthetic(bible["train"], pairs, args.seed, work / "corpora" / name)
        print(f"# {corpus['path']}: {corpus['bytes'] / 1e6:,.0f} MB", flush=True)
        entry: dict[str, Any] = {"corpus": corpus}
        if not args.write_only and args.streaming:
            entry = measure_streaming(args, corpus, bible, work / "runs" / f"stream-{pairs}")
            print_result(pairs, entry)
        elif not args.write_only and pairs <= args.measure_max_pairs:
            entry = measure_size(args, corpus, bible, work / "runs" / str(pairs))
            entry["targets"] = [
                {"target": t, "measured": v, "met": m} for t, v, m in targets(entry)
            ]
            print_result(pairs, entry)
        elif not args.write_only:
            print(f"# {pairs:,} pairs: written only (above --measure-max-pairs)")
        report["sizes"][str(pairs)] = entry
        if args.output:
            report["load_average"] = os.getloadavg()
            Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    if not report["sizes"] or all("build" not in e for e in report["sizes"].values()):
        return
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "?"
    print(
        f"\n# {args.experiment}, vocab {args.vocab_size}, 1 thread per process, "
        f"{args.steps} steps; {os.cpu_count()} cores, torch {torch_version}, "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    args = parse_args()
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        {"build": worker_build, "train": worker_train}[args.worker](spec)
        return
    run(args)


if __name__ == "__main__":
    main()
