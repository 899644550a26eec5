#!/usr/bin/env python
"""All of issue 8's speed ratios in one run: seqlab against its peers, side by side.

At the base shape (6+6 layers, model dim 512, FFN 2048, 8 heads, vocabulary 8000, dropout
0.1), in one process, with one thread setting for every engine:

1. training tokens/s against Hugging Face's MarianMTModel (train mode, dropout on, the same
   64 x 64-token batch), and the fraction of the fp32 matrix-multiply peak (measured here
   with a large ``torch.matmul``) that seqlab's step reaches;
2. beam-4 and greedy decoding of 16 sentences, 64 decoder steps each, against CTranslate2
   float32 (the same weights, converted by seqlab's exporter), of the inference copy that
   ``seqlab decode`` decodes (Linear layers packed for oneDNN);
3. int8 beam-4 decoding (``seqlab.quant.ptq.quantize_int8``: dynamic int8 Linear layers and
   output projection) against CTranslate2 int8;
4. the input pipeline's tokens/s (reading, tokenizing, bucketing and batching raw text)
   against the training tokens/s of (1).

Weights are random (speed does not depend on them); both engines are forced to emit exactly
the same number of tokens. Timed repetitions alternate seqlab and the peer, so background load
hits both; ratios are therefore steadier than absolute numbers on a busy machine.

    python bench/run_all.py                  # the full run (about 15 min on a quiet 2-core box)
    python bench/run_all.py --quick          # a small shape, a couple of minutes
    python bench/run_all.py --profile        # plus torch.profiler tables of seqlab's side

See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transformer_vs_marian import (  # noqa: E402
    build_marian,
    hf_inputs,
    hf_train_step,
    make_batch,
    profile,
    seqlab_forced_length,
    seqlab_train_step,
    time_pair,
    trainable,
)
from ctranslate2_decode import CTranslate2Decoder  # noqa: E402
from input_pipeline import prepared_data, time_input_pipeline  # noqa: E402
from matmul_peak import count_flops, measure_matmul_peak  # noqa: E402

from seqlab.core.heap_retention import retain_freed_heap_memory  # noqa: E402
from seqlab.core.nested_map import NestedMap  # noqa: E402
from seqlab.core.registry import get_experiment  # noqa: E402
from seqlab.data.mt_data import MTExamples, collate  # noqa: E402
from seqlab.data.sentencepiece_tokenizer import EOS_ID  # noqa: E402
from seqlab.decoding.greedy import greedy_search  # noqa: E402
from seqlab.layers.packed_linear import pack_linear_layers  # noqa: E402
from seqlab.quant.ptq import quantize_int8  # noqa: E402

_FIRST_NORMAL_ID = 4  # ids below are pad, unk, bos, eos
_LEARNING_RATE = 1e-4
DECODE_RATIOS = ("beam", "greedy", "int8")
RATIOS = ("train", "train_bf16", *DECODE_RATIOS, "pipeline")
TRAIN_PRECISIONS = {"train": "none", "train_bf16": "bfloat16"}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclasses.dataclass(frozen=True)
class Shape:
    """What is measured: the model, the batches and the repetitions."""

    experiment: str
    overrides: tuple[str, ...]
    train_sentences: int
    train_length: int
    decode_sentences: int
    decode_min_source: int
    decode_max_source: int
    decode_steps: int
    warmup: int
    reps: int
    pipeline_reps: int


BASE = Shape(
    experiment="mt.bible_en_es.transformer_base",
    overrides=("task.embedding.vocab_size=8000", "data.tokenizer.vocab_size=8000"),
    train_sentences=64,
    train_length=64,
    decode_sentences=16,
    decode_min_source=20,
    decode_max_source=40,
    decode_steps=64,
    warmup=1,
    reps=5,
    pipeline_reps=3,
)
QUICK = Shape(
    experiment="mt.bible_en_es.transformer_small",
    overrides=(),
    train_sentences=16,
    train_length=32,
    decode_sentences=8,
    decode_min_source=10,
    decode_max_source=20,
    decode_steps=16,
    warmup=1,
    reps=3,
    pipeline_reps=1,
)

# (what is compared, target ratio): the ratio is seqlab's speed over the peer's.
TARGETS = {
    "train": ("training tokens/s vs HF Marian, dropout on", 1.15),
    "train_bf16": ("  the same, both under bfloat16 autocast", 1.15),
    "beam": ("beam-4 decoding vs CTranslate2 float32", 1.0),
    "greedy": ("greedy decoding vs CTranslate2 float32", 1.0),
    "int8": ("int8 beam-4 decoding vs CTranslate2 int8", 0.9),
    "pipeline": ("input pipeline tokens/s vs training tokens/s", 20.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="Small shape and few repetitions.")
    p.add_argument(
        "--only",
        default=",".join(RATIOS),
        help=f"Comma-separated subset of: {', '.join(RATIOS)} (pipeline needs train).",
    )
    p.add_argument("--threads", type=int, default=2, help="Intra-op threads of every engine.")
    p.add_argument(
        "--clock",
        default="wall",
        choices=sorted(CLOCKS),
        help="wall: elapsed time (the measurement). cpu: CPU seconds of this process, which "
        "leaves out time lost to other processes; only meaningful with --threads 1, for "
        "comparing on a busy machine.",
    )
    p.add_argument("--reps", type=int, default=None, help="Timed repetitions (default: shape's).")
    p.add_argument("--warmup", type=int, default=None, help="Untimed runs (default: shape's).")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override of the seqlab experiment config, after the shape's own overrides.",
    )
    p.add_argument(
        "--cache-dir",
        default="",
        help="Corpus and tokenizer cache (data.cache_dir); empty = $SEQLAB_CACHE or default.",
    )
    p.add_argument("--profile", action="store_true", help="Print torch.profiler tables.")
    p.add_argument("--profile-rows", type=int, default=15, help="Ops per profile table.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the weights and batches.")
    p.add_argument(
        "--retain-heap",
        action="store_true",
        help="Keep freed memory in the heap, as the seqlab command line does "
        "(seqlab.core.heap_retention); process-wide, so the peers run with it too.",
    )
    p.add_argument("--output", default=None, help="Also write everything as JSON here.")
    args = p.parse_args(argv)
    args.ratios = [x.strip() for x in args.only.split(",") if x.strip()]
    for name in args.ratios:
        if name not in RATIOS:
            p.error(f"--only: unknown {name!r}; expected some of {', '.join(RATIOS)}")
    if "pipeline" in args.ratios and not set(TRAIN_PRECISIONS) & set(args.ratios):
        p.error("--only: pipeline is a ratio to the training tokens/s; add train")
    shape = QUICK if args.quick else BASE
    args.shape = dataclasses.replace(
        shape,
        reps=shape.reps if args.reps is None else args.reps,
        warmup=shape.warmup if args.warmup is None else args.warmup,
    )
    if args.shape.reps < 1 or args.shape.warmup < 0 or args.threads < 1:
        p.error("need --reps >= 1, --warmup >= 0, --threads >= 1")
    return args


# ---- inputs -----------------------------------------------------------------------------------
def decode_batch(shape: Shape, vocab_size: int, seed: int) -> NestedMap:
    """``decode_sentences`` random sources of random lengths, each ending in EOS, collated by
    seqlab's MT collate."""
    g = torch.Generator().manual_seed(seed + 1)
    sources = []
    for _ in range(shape.decode_sentences):
        length = int(
            torch.randint(shape.decode_min_source, shape.decode_max_source + 1, (1,), generator=g)
        )
        ids = torch.randint(_FIRST_NORMAL_ID, vocab_size, (length,), generator=g).tolist()
        sources.append(ids + [EOS_ID])
    n = len(sources)
    examples = MTExamples(sources, [[] for _ in sources], [""] * n, [""] * n)
    return collate(examples, list(range(n)))


def source_id_lists(batch: NestedMap) -> list[list[int]]:
    lengths = (batch.src_paddings < 0.5).sum(1).tolist()
    return [row[:n] for row, n in zip(batch.src_ids.tolist(), lengths, strict=True)]


# ---- seqlab's decoders ------------------------------------------------------------------------
def seqlab_beam(task: Any, batch: NestedMap, steps: int) -> list[list[int]]:
    """``task.decode`` (its BeamSearch) running ``steps`` steps: ``steps - 1`` tokens, then EOS."""
    task.eval()
    with torch.no_grad(), seqlab_forced_length(task, steps - 1, tight_cache=True):
        return task.decode(batch).ids


def seqlab_greedy(task: Any, batch: NestedMap, steps: int) -> list[list[int]]:
    """``greedy_search`` over the task's decoder, ``steps`` tokens (EOS masked throughout)."""
    task.eval()
    b = batch.src_ids.shape[0]
    with torch.no_grad(), seqlab_forced_length(task, steps, tight_cache=True):
        encoded = task.encode(batch.src_ids, batch.src_paddings)
        state = task.init_decoder_state(encoded, batch.src_paddings, steps)
        max_lengths = torch.full((b,), steps, dtype=torch.long)
        return greedy_search(task, state, task.config.start_id, EOS_ID, b, max_lengths)


# ---- one comparison ---------------------------------------------------------------------------
def compare(
    fns: dict[str, Callable[[], Any]],
    expected: dict[str, Callable[[Any], str | None]],
    shape: Shape,
    clock: Callable[[], float],
) -> dict[str, Any]:
    """Checks each side's output, then times both sides interleaved."""
    for side, fn in fns.items():
        problem = expected[side](fn())
        if problem:
            raise SystemExit(f"{side}: {problem}")
    return time_pair(fns, shape.warmup, shape.reps, clock)


def lengths_are(n: int) -> Callable[[Any], str | None]:
    def check(outputs: Any) -> str | None:
        lengths = sorted({len(x) for x in outputs})
        return None if lengths == [n] else f"forced length {n} not met: lengths {lengths}"

    return check


@dataclasses.dataclass
class Bench:
    """The models, batches and results of one run."""

    args: argparse.Namespace
    experiment: Any
    task: Any
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    profiles: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> Shape:
        return self.args.shape

    def log(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.args.started:6.0f}s] {text}", flush=True)

    def maybe_profile(self, name: str, fn: Callable[[], Any]) -> None:
        if self.args.profile:
            self.profiles[name] = profile(name, fn, rows=self.args.profile_rows)
            print(self.profiles[name], flush=True)

    # ---- 1. training ----------------------------------------------------------------------------
    def train(self, name: str) -> None:
        """Ratio ``name``: "train" in float32, "train_bf16" under bfloat16 autocast (both
        models; seqlab's trainer does the same for ``trainer.mixed_precision=bfloat16``)."""
        shape, args = self.shape, self.args
        precision = TRAIN_PRECISIONS[name]
        ns = argparse.Namespace(
            seed=args.seed,
            batch_size=shape.train_sentences,
            min_length=shape.train_length,
            max_length=shape.train_length,
            hf_attention="sdpa",
        )
        batch = make_batch(ns, self.experiment.task.embedding.vocab_size)
        marian, notes = build_marian(ns, self.experiment.task)
        opt = self.experiment.trainer.optimizer
        s_opt = opt.build(trainable(self.task), lr=_LEARNING_RATE)
        h_opt = opt.build(trainable(marian), lr=_LEARNING_RATE)
        fns = {
            "seqlab": functools.partial(
                seqlab_train_step, self.experiment, self.task, s_opt, batch, precision
            ),
            "hf": functools.partial(
                hf_train_step, self.experiment, marian, h_opt, hf_inputs(batch), precision
            ),
        }
        self.log(f"{name}: measuring the fp32 matmul peak and counting FLOPs")
        peak = measure_matmul_peak(clock=CLOCKS[args.clock])
        flops = {side: count_flops(fn) for side, fn in fns.items()}
        self.log(f"{name}: timing {shape.reps} steps per side")
        stats = time_pair(fns, shape.warmup, shape.reps, CLOCKS[args.clock])
        peak_after = measure_matmul_peak(clock=CLOCKS[args.clock])
        tokens = int((batch.src_paddings < 0.5).sum() + (batch.tgt_paddings < 0.5).sum())
        target_tokens = int((batch.tgt_paddings < 0.5).sum())
        sides = {}
        for side in fns:
            seconds = stats[side]["median_s"]
            sides[side] = {
                **stats[side],
                "tokens_per_s": tokens / seconds,
                "target_tokens_per_s": target_tokens / seconds,
                "gflops_per_step": flops[side] / 1e9,
                "gflop_per_s": flops[side] / seconds / 1e9,
                "fraction_of_peak": flops[side] / seconds / 1e9 / max(peak, peak_after),
            }
        self.results[name] = {
            "ratio": stats["hf"]["median_s"] / stats["seqlab"]["median_s"],
            "seqlab": sides["seqlab"],
            "peer": sides["hf"],
            "peer_name": "HF MarianMTModel",
            "precision": precision,
            "matmul_peak_gflop_per_s": max(peak, peak_after),
            "matmul_peak_before_after": [peak, peak_after],
            "batch": {
                "sentences": shape.train_sentences,
                "source_shape": list(batch.src_ids.shape),
                "target_shape": list(batch.tgt_in_ids.shape),
                "tokens": tokens,
                "target_tokens": target_tokens,
            },
            "model_differences": notes,
        }
        self.maybe_profile(f"seqlab training step ({precision})", fns["seqlab"])
        del marian, h_opt

    # ---- 2./3. decoding -------------------------------------------------------------------------
    def decode(self, tokenizer: Any) -> None:
        shape, args = self.shape, self.args
        steps = shape.decode_steps
        batch = decode_batch(shape, self.experiment.task.embedding.vocab_size, args.seed)
        sources = source_id_lists(batch)
        beam = self.experiment.task.beam_search
        want = {r for r in DECODE_RATIOS if r in args.ratios}
        ct2_fp32 = CTranslate2Decoder(self.task, tokenizer, "float32", args.threads)
        try:
            # The task as seqlab decode, the decoder job and seqlab infer decode it: an
            # inference copy with its float Linear layers packed for oneDNN.
            rows = shape.decode_sentences * beam.beam_size
            runs: list[tuple[str, Any, Any, int, str]] = []
            if {"beam", "greedy"} & want:
                packed = pack_linear_layers(self.task, expected_rows=rows)
                if "beam" in want:
                    runs.append(("beam", packed, ct2_fp32, beam.beam_size, "float32"))
                if "greedy" in want:
                    runs.append(("greedy", packed, ct2_fp32, 1, "float32"))
            if "int8" in want:
                ct2_int8 = CTranslate2Decoder(
                    self.task, tokenizer, "int8", args.threads, model_dir=ct2_fp32.model_dir
                )
                int8 = pack_linear_layers(quantize_int8(self.task), expected_rows=rows)
                runs.append(("int8", int8, ct2_int8, beam.beam_size, "int8"))
            for name, task, ct2, beam_size, compute_type in runs:
                decoder = seqlab_greedy if beam_size == 1 else seqlab_beam
                fns = {
                    "seqlab": functools.partial(decoder, task, batch, steps),
                    "ctranslate2": functools.partial(
                        ct2.decode, sources, steps, beam_size, beam.length_penalty_alpha
                    ),
                }
                # seqlab's beam returns its tokens without the EOS of the last step.
                seqlab_tokens = steps - 1 if beam_size > 1 else steps
                self.log(f"{name}: timing {shape.reps} decodes per side")
                stats = compare(
                    fns,
                    {"seqlab": lengths_are(seqlab_tokens), "ctranslate2": lengths_are(steps)},
                    shape,
                    CLOCKS[args.clock],
                )
                tokens = shape.decode_sentences * steps
                self.results[name] = {
                    "ratio": stats["ctranslate2"]["median_s"] / stats["seqlab"]["median_s"],
                    "seqlab": {
                        **stats["seqlab"],
                        "tokens_per_s": tokens / stats["seqlab"]["median_s"],
                    },
                    "peer": {
                        **stats["ctranslate2"],
                        "tokens_per_s": tokens / stats["ctranslate2"]["median_s"],
                    },
                    "peer_name": f"CTranslate2 {compute_type}",
                    "beam_size": beam_size,
                    "sentences": shape.decode_sentences,
                    "decoder_steps": steps,
                    "source_shape": list(batch.src_ids.shape),
                }
                self.maybe_profile(f"seqlab {name} decoding", fns["seqlab"])
        finally:
            ct2_fp32.close()

    # ---- 4. input pipeline ----------------------------------------------------------------------
    def pipeline(self, data: Any) -> None:
        runs = []
        for _ in range(self.shape.pipeline_reps):
            runs.append(time_input_pipeline(data, self.args.seed, CLOCKS[self.args.clock]))
        runs.sort(key=lambda r: r.seconds)
        median = runs[len(runs) // 2]
        train_tps = max(
            self.results[name]["seqlab"]["tokens_per_s"]
            for name in TRAIN_PRECISIONS
            if name in self.results
        )
        self.results["pipeline"] = {
            "ratio": median.tokens_per_second / train_tps,
            "seqlab": {"tokens_per_s": median.tokens_per_second, **dataclasses.asdict(median)},
            "peer": {"tokens_per_s": train_tps},
            "peer_name": "seqlab training, fastest precision",
            "all_seconds": [r.seconds for r in runs],
        }
        self.maybe_profile(
            "input pipeline (one epoch)", functools.partial(time_input_pipeline, data)
        )


# ---- report -----------------------------------------------------------------------------------
def print_report(bench: Bench) -> None:
    rows = [["ratio", "seqlab", "peer", "seqlab/peer", "target", "met"]]
    for name, (label, target) in TARGETS.items():
        r = bench.results.get(name)
        if r is None:
            continue
        unit = "tok/s"
        rows.append(
            [
                label,
                f"{r['seqlab']['tokens_per_s']:.0f} {unit}",
                f"{r['peer']['tokens_per_s']:.0f} {unit} ({r['peer_name']})",
                f"{r['ratio']:.2f}",
                f">= {target:g}",
                "yes" if r["ratio"] >= target else f"no ({r['ratio'] / target - 1:+.1%})",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for name in TRAIN_PRECISIONS:
        train = bench.results.get(name)
        if not train:
            continue
        s, h = train["seqlab"], train["peer"]
        print(
            f"\n{name}: fp32 matmul peak {train['matmul_peak_gflop_per_s']:.0f} GFLOP/s "
            f"({bench.args.threads} threads); step: seqlab {s['gflop_per_s']:.0f} GFLOP/s "
            f"= {s['fraction_of_peak']:.0%} of that peak, Marian {h['gflop_per_s']:.0f} GFLOP/s "
            f"= {h['fraction_of_peak']:.0%}; target tokens/s: seqlab "
            f"{s['target_tokens_per_s']:.0f}, Marian {h['target_tokens_per_s']:.0f}"
        )
    print(
        "Medians over the repetitions; [min-max] spreads and every time are in --output. "
        "Decoding tok/s = sentences x decoder steps / time."
    )


def environment(args: argparse.Namespace) -> dict[str, Any]:
    versions = {"torch": torch.__version__}
    for name in ("transformers", "ctranslate2", "sentencepiece"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    cpu = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return {
        **versions,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "retain_heap": args.retain_heap,
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.started = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.retain_heap and not retain_freed_heap_memory():
        raise SystemExit("--retain-heap: not applied (not glibc, or MALLOC_* already set)")
    shape = args.shape
    experiment = get_experiment(shape.experiment)
    experiment.apply_overrides(list(shape.overrides) + args.set)
    if args.cache_dir:
        experiment.data.cache_dir = args.cache_dir
    torch.manual_seed(args.seed)
    task = experiment.task.build()
    env_before = environment(args)
    print(
        f"{shape.experiment} {' '.join(shape.overrides + tuple(args.set))}: "
        f"{sum(p.numel() for p in task.parameters()) / 1e6:.1f}M parameters; "
        f"torch {env_before['torch']}, ctranslate2 {env_before['ctranslate2']}, "
        f"transformers {env_before['transformers']}; {args.threads} threads; "
        f"{'heap retained; ' if args.retain_heap else ''}"
        f"load average {env_before['load_average'][0]:.1f}",
        flush=True,
    )
    bench = Bench(args=args, experiment=experiment, task=task)
    data = None
    if {*DECODE_RATIOS, "pipeline"} & set(args.ratios):
        bench.log("preparing the corpus and tokenizer (not timed)")
        data = prepared_data(experiment.data)
    for name in TRAIN_PRECISIONS:
        if name in args.ratios:
            bench.train(name)
    if set(DECODE_RATIOS) & set(args.ratios):
        bench.decode(data.tokenizer)
    if "pipeline" in args.ratios:
        bench.log("input pipeline: timing one epoch")
        bench.pipeline(data)
    print_report(bench)
    env_after = environment(args)
    bench.log(f"done; load average {env_after['load_average'][0]:.1f}")
    if args.output:
        out = {
            "shape": dataclasses.asdict(shape),
            "overrides": list(shape.overrides) + args.set,
            "environment": {"before": env_before, "after": env_after},
            "targets": {k: {"label": v[0], "ratio": v[1]} for k, v in TARGETS.items()},
            "results": bench.results,
            "profiles": bench.profiles,
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
