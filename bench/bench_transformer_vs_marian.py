#!/usr/bin/env python
"""Side-by-side speed of seqlab's TransformerMT and Hugging Face's MarianMTModel of one shape.

One run times, for each requested precision (fp32 and/or bfloat16 autocast):

- ``train``: one training step (forward, label-smoothed loss, backward, gradient clipping,
  AdamW step), in train mode with dropout, on the same batch for both models;
- ``decode``: beam-4 decoding of the same source batch in eval mode, with both searches forced
  to emit exactly ``--decode-tokens`` tokens and then EOS (so both run the same number of
  decoder steps over the same number of beams).

seqlab's model is built from a registered experiment config; the Marian model is randomly
initialized from a ``MarianConfig`` with the same vocabulary, widths, depths, heads, FFN size,
activation, dropouts and tied embeddings. See bench/README.md for what differs and why.

    python bench/bench_transformer_vs_marian.py --quick
    python bench/bench_transformer_vs_marian.py --output /tmp/bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from seqlab.core.layer import lengths_to_paddings
from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment
from seqlab.data.sentencepiece_tokenizer import BOS_ID, EOS_ID, PAD_ID
from seqlab.train.device import CPU
from seqlab.train.mixed_precision import autocast

# Token ids below this are special (pad, unk, bos, eos); random tokens are drawn above it.
_FIRST_NORMAL_ID = 4
_LEARNING_RATE = 1e-4


# ---- arguments ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--experiment",
        default="mt.bible_en_es.transformer_small",
        help="Registered seqlab experiment whose task config sets the model shape.",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override of the seqlab experiment config (as `seqlab train --set`), "
        "e.g. task.encoder.layer.norm_first=false; the Marian model follows.",
    )
    p.add_argument("--batch-size", type=int, default=32, help="Sentences per batch.")
    p.add_argument(
        "--min-length",
        type=int,
        default=20,
        help="Shortest source/target sentence in tokens (EOS not counted).",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=40,
        help="Longest source/target sentence in tokens (EOS not counted).",
    )
    p.add_argument(
        "--decode-tokens",
        type=int,
        default=32,
        help="Tokens every beam search is forced to emit before EOS.",
    )
    p.add_argument("--warmup", type=int, default=2, help="Untimed iterations per model and phase.")
    p.add_argument("--reps", type=int, default=7, help="Timed repetitions per model and phase.")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both.")
    p.add_argument(
        "--mixed-precision",
        default="none,bfloat16",
        help="Comma-separated list of: none, bfloat16 (CPU autocast for both models).",
    )
    p.add_argument("--phases", default="train,decode", help="Comma-separated list: train, decode.")
    p.add_argument(
        "--hf-attention",
        default="sdpa",
        choices=["sdpa", "eager"],
        help="attn_implementation of the Marian model.",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of the batch and both inits.")
    p.add_argument(
        "--quick",
        action="store_true",
        help="Small run (< 1 min): 1 warm-up, 3 reps, 16 decode tokens, fp32 only "
        "unless --mixed-precision is given explicitly.",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="After timing, profile one decode per model (fp32) with torch.profiler "
        "and print the ops that take the most self CPU time.",
    )
    p.add_argument("--output", default=None, help="Write the results as JSON to this path.")
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        args.warmup = 1 if "--warmup" not in explicit else args.warmup
        args.reps = 3 if "--reps" not in explicit else args.reps
        if "--decode-tokens" not in explicit:
            args.decode_tokens = 16
        if "--mixed-precision" not in explicit:
            args.mixed_precision = "none"
    args.precisions = [x.strip() for x in args.mixed_precision.split(",") if x.strip()]
    args.phase_list = [x.strip() for x in args.phases.split(",") if x.strip()]
    for prec in args.precisions:
        if prec not in ("none", "bfloat16"):
            p.error(f"--mixed-precision: unknown {prec!r}; expected none or bfloat16")
    for phase in args.phase_list:
        if phase not in ("train", "decode"):
            p.error(f"--phases: unknown {phase!r}; expected train or decode")
    if not 1 <= args.min_length <= args.max_length:
        p.error("need 1 <= --min-length <= --max-length")
    if args.reps < 1 or args.warmup < 0 or args.decode_tokens < 1:
        p.error("need --reps >= 1, --warmup >= 0, --decode-tokens >= 1")
    return args


# ---- the batch ------------------------------------------------------------------------------
def make_batch(args: argparse.Namespace, vocab_size: int) -> NestedMap:
    """Random token ids of random lengths, laid out as seqlab's MT collate lays them out."""
    g = torch.Generator().manual_seed(args.seed)
    b = args.batch_size

    def lengths() -> torch.Tensor:
        return torch.randint(args.min_length, args.max_length + 1, (b,), generator=g)

    def tokens(n: int) -> torch.Tensor:
        return torch.randint(_FIRST_NORMAL_ID, vocab_size, (n,), generator=g)

    src_lengths, tgt_lengths = lengths(), lengths()
    s_len, t_len = int(src_lengths.max()), int(tgt_lengths.max()) + 1
    src_ids = torch.full((b, s_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((b, t_len), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((b, t_len), PAD_ID, dtype=torch.long)
    for row in range(b):
        s, t = tokens(int(src_lengths[row])), tokens(int(tgt_lengths[row]))
        src_ids[row, : len(s)] = s
        tgt_in[row, : len(t) + 1] = torch.cat([torch.tensor([BOS_ID]), t])
        tgt_out[row, : len(t) + 1] = torch.cat([t, torch.tensor([EOS_ID])])
    return NestedMap(
        src_ids=src_ids,
        src_paddings=lengths_to_paddings(src_lengths, s_len),
        tgt_in_ids=tgt_in,
        tgt_out_ids=tgt_out,
        tgt_paddings=lengths_to_paddings(tgt_lengths + 1, t_len),
    )


# ---- the models ------------------------------------------------------------------------------
def build_seqlab(args: argparse.Namespace) -> tuple[Any, Any]:
    config = get_experiment(args.experiment)
    config.apply_overrides(args.set)
    torch.manual_seed(args.seed)
    return config, config.task.build()


def marian_config_for(task_config: Any, hf_attention: str) -> tuple[Any, list[str]]:
    """A MarianConfig of the same shape as a TransformerMT config, plus the differences."""
    from transformers import MarianConfig

    tc = task_config
    enc, dec = tc.encoder.layer, tc.decoder.layer
    notes: list[str] = []
    for name, layer in (("encoder", enc), ("decoder", dec)):
        if layer.norm_first:
            notes.append(
                f"seqlab {name} is pre-LN (plus a final LayerNorm); Marian has only post-LN"
            )
        if layer.ffn.activation != enc.ffn.activation:
            raise SystemExit("encoder and decoder activations differ; Marian has one")
        if layer.layer_norm_epsilon != 1e-5:
            notes.append(f"seqlab {name} LayerNorm eps {layer.layer_norm_epsilon}; Marian 1e-5")
    if enc.self_attention.num_heads != dec.self_attention.num_heads:
        notes.append("head counts differ between seqlab's encoder and decoder")
    dropouts = {
        "input": tc.input_dropout_prob,
        "residual": enc.residual_dropout_prob,
    }
    if len({*dropouts.values(), dec.residual_dropout_prob}) != 1:
        notes.append(
            f"seqlab dropouts {dropouts} differ; Marian has one `dropout`, set to residual"
        )
    config = MarianConfig(
        vocab_size=tc.embedding.vocab_size,
        d_model=enc.model_dim,
        encoder_layers=tc.encoder.num_layers,
        decoder_layers=tc.decoder.num_layers,
        encoder_attention_heads=enc.self_attention.num_heads,
        decoder_attention_heads=dec.self_attention.num_heads,
        encoder_ffn_dim=enc.ffn.hidden_dim,
        decoder_ffn_dim=dec.ffn.hidden_dim,
        activation_function=enc.ffn.activation,
        dropout=enc.residual_dropout_prob,
        attention_dropout=enc.self_attention.dropout_prob,
        activation_dropout=enc.ffn.dropout_prob,
        max_position_embeddings=tc.positions.max_length,
        scale_embedding=tc.embedding.scale_by_sqrt_dim,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        forced_eos_token_id=EOS_ID,
        decoder_start_token_id=BOS_ID,
    )
    config._attn_implementation = hf_attention
    notes.append(
        "Marian: separate q/k/v projections (seqlab fuses k and v in one matmul); an extra "
        "final_logits_bias (zeros) is added to the logits"
    )
    return config, notes


def build_marian(args: argparse.Namespace, task_config: Any) -> tuple[Any, list[str]]:
    from transformers import MarianMTModel

    config, notes = marian_config_for(task_config, args.hf_attention)
    torch.manual_seed(args.seed)
    model = MarianMTModel(config)
    emb = model.get_input_embeddings().weight
    if model.lm_head.weight.data_ptr() != emb.data_ptr():
        raise SystemExit("MarianMTModel did not tie its output layer to the embeddings")
    return model, notes


def trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def num_params(module: torch.nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if p.requires_grad and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


# ---- one training step -----------------------------------------------------------------------
def seqlab_train_step(
    experiment: Any,
    task: Any,
    optimizer: Any,
    batch: NestedMap,
    precision: str,
    device: torch.device = CPU,
) -> float:
    """As seqlab.train.trainer.Trainer.train_step: autocast forward+loss, backward, clip, step.

    ``device``: where the task and batch are (autocast's device; bench/gpu_check.py passes
    a CUDA device).
    """
    params = optimizer.param_groups[0]["params"]
    clip = experiment.trainer.clip_gradient_norm
    task.train()
    with autocast(precision, device):
        predictions = task.compute_predictions(batch)
        loss, _ = task.compute_loss(batch, predictions)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    optimizer.step()
    return float(loss.detach())


def hf_train_step(
    experiment: Any,
    model: Any,
    optimizer: Any,
    hf_batch: dict[str, torch.Tensor],
    precision: str,
    device: torch.device = CPU,
) -> float:
    """The usual Hugging Face step: model(...) logits, label-smoothed CE, backward, clip, step.

    ``device``: where the model and batch are (autocast's device).
    """
    params = optimizer.param_groups[0]["params"]
    clip = experiment.trainer.clip_gradient_norm
    smoothing = experiment.task.loss.label_smoothing
    model.train()
    with autocast(precision, device):
        logits = model(
            input_ids=hf_batch["input_ids"],
            attention_mask=hf_batch["attention_mask"],
            decoder_input_ids=hf_batch["decoder_input_ids"],
            decoder_attention_mask=hf_batch["decoder_attention_mask"],
        ).logits
        loss = F.cross_entropy(
            logits.float().flatten(0, 1),
            hf_batch["labels"].flatten(),
            ignore_index=-100,
            label_smoothing=smoothing,
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    optimizer.step()
    return float(loss.detach())


def hf_inputs(batch: NestedMap) -> dict[str, torch.Tensor]:
    tgt_mask = (batch.tgt_paddings < 0.5).long()
    return {
        "input_ids": batch.src_ids,
        "attention_mask": (batch.src_paddings < 0.5).long(),
        "decoder_input_ids": batch.tgt_in_ids,
        "decoder_attention_mask": tgt_mask,
        "labels": batch.tgt_out_ids.masked_fill(tgt_mask == 0, -100),
    }


# ---- decoding --------------------------------------------------------------------------------
@contextlib.contextmanager
def seqlab_forced_length(task: Any, num_tokens: int, tight_cache: bool):
    """Makes ``task.decode`` emit exactly ``num_tokens`` tokens and then EOS, for every beam.

    EOS gets -inf before step ``num_tokens`` (the same as Hugging Face's min-new-tokens
    processor). ``tight_cache``: the beam config's length rule is set to ``num_tokens``, so the
    search itself forces EOS at step ``num_tokens`` and the decoder caches hold exactly the
    steps taken. Otherwise the experiment's own rule (ratio * source length + offset) sizes the
    caches, as in real decoding, and EOS is forced at step ``num_tokens`` here.
    """
    search = task.config.beam_search
    saved = (search.max_decode_length_ratio, search.max_decode_length_offset)
    if tight_cache:
        search.max_decode_length_ratio, search.max_decode_length_offset = 0.0, num_tokens
    inner = task.extend_step  # the class's bound method (or an instance override)
    previous = task.__dict__.get("extend_step")

    def extend_step(state: NestedMap, ids: torch.Tensor, *a: Any, **kw: Any):
        step = state.step
        log_probs, state, attention = inner(state, ids, *a, **kw)
        if step < num_tokens:
            log_probs[:, EOS_ID] = -math.inf
        elif step == num_tokens and not tight_cache:
            eos = log_probs[:, EOS_ID].clone()
            log_probs.fill_(-math.inf)
            log_probs[:, EOS_ID] = eos
        return log_probs, state, attention

    task.extend_step = extend_step  # instance attribute: TransformerMT.decode passes `self`
    try:
        yield
    finally:
        if previous is None:
            del task.extend_step
        else:
            task.extend_step = previous
        search.max_decode_length_ratio, search.max_decode_length_offset = saved


def seqlab_decode(
    task: Any, batch: NestedMap, precision: str, num_tokens: int, tight_cache: bool
) -> list[list[int]]:
    """As seqlab.train.decode_runner: eval mode, no_grad, ``task.decode`` (plus autocast)."""
    task.eval()
    with (
        torch.no_grad(),
        autocast(precision, CPU),
        seqlab_forced_length(task, num_tokens, tight_cache),
    ):
        return task.decode(batch).ids


class SuppressEOSUntil:
    """Logits processor: EOS gets -inf until ``num_tokens`` tokens have been generated.

    The same one in-place column write per step as the seqlab side (``seqlab_forced_length``);
    Hugging Face's own ``min_new_tokens`` processor would clone the scores and run
    ``isin`` + ``where`` at every step, charging the harness to the HF side.
    """

    def __init__(self, num_tokens: int, eos_id: int, prompt_length: int = 1) -> None:
        self.num_tokens, self.eos_id, self.prompt_length = num_tokens, eos_id, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] - self.prompt_length < self.num_tokens:
            scores[:, self.eos_id] = -math.inf
        return scores


def hf_decode(
    model: Any,
    hf_batch: dict[str, torch.Tensor],
    precision: str,
    num_tokens: int,
    beam_size: int,
    length_penalty: float,
) -> torch.Tensor:
    """``generate`` with the same beam, forced to ``num_tokens`` tokens then EOS.

    The decoder prompt is the one start token; EOS is suppressed before ``num_tokens`` new
    tokens and forced (the config's ``forced_eos_token_id``) at the last of ``num_tokens + 1``.
    """
    from transformers import LogitsProcessorList

    model.eval()
    with torch.no_grad(), autocast(precision, CPU):
        return model.generate(
            input_ids=hf_batch["input_ids"],
            attention_mask=hf_batch["attention_mask"],
            num_beams=beam_size,
            num_return_sequences=1,
            do_sample=False,
            max_new_tokens=num_tokens + 1,
            logits_processor=LogitsProcessorList([SuppressEOSUntil(num_tokens, EOS_ID)]),
            length_penalty=length_penalty,
            early_stopping=False,
            use_cache=True,
        )


# ---- timing ----------------------------------------------------------------------------------
def summarize(times: list[float], faults: list[int]) -> dict[str, Any]:
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median_s": statistics.median(ordered),
        "min_s": ordered[0],
        "max_s": ordered[-1],
        "p25_s": q[0],
        "p75_s": q[2],
        "mean_s": statistics.fmean(ordered),
        "stdev_s": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "times_s": ordered,
        # Minor page faults per call: fresh large tensors (glibc serves big allocations with
        # mmap) cost a page fault per 4 KiB page on first touch.
        "minor_page_faults_median": statistics.median(faults),
    }


def time_pair(
    fns: dict[str, Callable[[], Any]],
    warmup: int,
    reps: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict]:
    """Times both functions interleaved (ABAB..., order alternating) so load drifts hit both.

    ``clock``: wall time by default; ``time.process_time`` (CPU seconds of all threads of
    this process) leaves out the time other processes take the cores away, which makes
    single-threaded comparisons on a busy machine usable.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = clock()
            fns[name]()
            times[name].append(clock() - start)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {name: summarize(times[name], faults[name]) for name in names}


def try_call(fn: Callable[[], Any]) -> str | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - reported in the table, not hidden
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


# ---- profiling -------------------------------------------------------------------------------
def profile(name: str, fn: Callable[[], Any], rows: int = 18) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return f"== {name} ==\n{table}"


# ---- report ----------------------------------------------------------------------------------
def fmt_time(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "n/a"
    return (
        f"{stats['median_s'] * 1e3:8.1f} ms [{stats['min_s'] * 1e3:.0f}-{stats['max_s'] * 1e3:.0f}]"
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    header = [
        "phase",
        "precision",
        "seqlab median [min-max]",
        "HF median [min-max]",
        "HF/seqlab",
        "seqlab tok/s",
        "HF tok/s",
    ]
    lines = []
    for r in rows:
        s, h = r.get("seqlab"), r.get("hf")
        ratio = f"{r['ratio_hf_over_seqlab']:.2f}" if r.get("ratio_hf_over_seqlab") else "n/a"
        lines.append(
            [
                r["phase"],
                r["precision"],
                fmt_time(s) if s else f"FAILED ({r.get('seqlab_error')})",
                fmt_time(h) if h else f"FAILED ({r.get('hf_error')})",
                ratio,
                f"{r['seqlab_tokens_per_s']:.0f}" if r.get("seqlab_tokens_per_s") else "n/a",
                f"{r['hf_tokens_per_s']:.0f}" if r.get("hf_tokens_per_s") else "n/a",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    sep = "  "
    print(sep.join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(sep.join("-" * w for w in widths))
    for line in lines:
        print(sep.join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))


def row_for(
    phase: str,
    precision: str,
    tokens: int,
    stats: dict[str, dict],
    errors: dict[str, str | None],
    note: str = "",
) -> dict[str, Any]:
    row: dict[str, Any] = {"phase": phase, "precision": precision, "tokens": tokens}
    if note:
        row["note"] = note
    for side in ("seqlab", "hf"):
        if errors.get(side):
            row[f"{side}_error"] = errors[side]
        elif side in stats:
            row[side] = stats[side]
            row[f"{side}_tokens_per_s"] = tokens / stats[side]["median_s"]
    if "seqlab" in row and "hf" in row:
        row["ratio_hf_over_seqlab"] = row["hf"]["median_s"] / row["seqlab"]["median_s"]
    return row


# ---- main ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    """Everything both phases need: the two models, the batch and its token counts."""

    args: argparse.Namespace
    experiment: Any
    task: Any
    model: Any
    batch: NestedMap
    hf_batch: dict[str, torch.Tensor]
    train_tokens: int
    decode_tokens: int
    length_rule_ok: bool

    @property
    def beam(self) -> Any:
        return self.experiment.task.beam_search

    def seqlab_decode(self, precision: str, tight_cache: bool) -> list[list[int]]:
        n = self.args.decode_tokens
        return seqlab_decode(self.task, self.batch, precision, n, tight_cache)

    def hf_decode(self, precision: str) -> torch.Tensor:
        beam = self.beam
        return hf_decode(
            self.model,
            self.hf_batch,
            precision,
            self.args.decode_tokens,
            beam.beam_size,
            beam.length_penalty_alpha,
        )


def bench_train(setup: Setup, precision: str) -> list[dict[str, Any]]:
    args, experiment = setup.args, setup.experiment
    opt_cfg = experiment.trainer.optimizer
    s_opt = opt_cfg.build(trainable(setup.task), lr=_LEARNING_RATE)
    h_opt = opt_cfg.build(trainable(setup.model), lr=_LEARNING_RATE)
    fns = {
        "seqlab": functools.partial(
            seqlab_train_step, experiment, setup.task, s_opt, setup.batch, precision
        ),
        "hf": functools.partial(
            hf_train_step, experiment, setup.model, h_opt, setup.hf_batch, precision
        ),
    }
    errors = {side: try_call(fn) for side, fn in fns.items()}
    ok = {side: fn for side, fn in fns.items() if not errors[side]}
    stats = time_pair(ok, max(args.warmup - 1, 0), args.reps) if ok else {}
    return [row_for("train_step", precision, setup.train_tokens, stats, errors)]


def bench_decode(setup: Setup, precision: str) -> list[dict[str, Any]]:
    args, beam = setup.args, setup.beam
    n = args.decode_tokens
    fns: dict[str, Callable[[], Any]] = {
        "seqlab": functools.partial(setup.seqlab_decode, precision, True),
        "hf": functools.partial(setup.hf_decode, precision),
    }
    if setup.length_rule_ok:
        fns["seqlab_lenrule"] = functools.partial(setup.seqlab_decode, precision, False)
    errors = {side: try_call(fn) for side, fn in fns.items()}
    for side in ("seqlab", "seqlab_lenrule"):
        if side in fns and not errors[side]:
            lengths = {len(ids) for ids in fns[side]()}
            if lengths != {n}:
                errors[side] = f"forced length not met: output lengths {sorted(lengths)}"
    if not errors["hf"]:
        shape = tuple(fns["hf"]().shape)
        if shape != (args.batch_size, n + 2):  # start token + n tokens + EOS
            errors["hf"] = f"forced length not met: output shape {shape}"
    ok = {side: fn for side, fn in fns.items() if not errors.get(side)}
    stats = time_pair(ok, max(args.warmup - 1, 0), args.reps) if ok else {}
    rows = [
        row_for(
            "decode_beam",
            precision,
            setup.decode_tokens,
            stats,
            errors,
            note=f"seqlab caches sized to the {n + 1} steps taken",
        )
    ]
    if setup.length_rule_ok:
        rule_stats = {"hf": stats["hf"]} if "hf" in stats else {}
        if "seqlab_lenrule" in stats:
            rule_stats["seqlab"] = stats["seqlab_lenrule"]
        rows.append(
            row_for(
                "decode_beam_lenrule",
                precision,
                setup.decode_tokens,
                rule_stats,
                {"seqlab": errors.get("seqlab_lenrule"), "hf": errors.get("hf")},
                note="seqlab caches sized by the experiment's length rule "
                f"({beam.max_decode_length_ratio} * source length + "
                f"{beam.max_decode_length_offset}); HF column is decode_beam's HF run",
            )
        )
    return rows


def make_setup(args: argparse.Namespace) -> tuple[Setup, list[str]]:
    experiment, task = build_seqlab(args)
    model, notes = build_marian(args, experiment.task)
    tc = experiment.task
    batch = make_batch(args, tc.embedding.vocab_size)
    beam = tc.beam_search
    # The length-rule variant needs every example's own limit to allow --decode-tokens.
    shortest_limit = min(
        math.floor(beam.max_decode_length_ratio * args.min_length + beam.max_decode_length_offset),
        tc.positions.max_length - 1,
    )
    setup = Setup(
        args=args,
        experiment=experiment,
        task=task,
        model=model,
        batch=batch,
        hf_batch=hf_inputs(batch),
        train_tokens=int((batch.src_paddings < 0.5).sum() + (batch.tgt_paddings < 0.5).sum()),
        decode_tokens=args.batch_size * (args.decode_tokens + 1),  # EOS included, not x beams
        length_rule_ok=args.decode_tokens <= shortest_limit,
    )
    return setup, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    import transformers

    setup, notes = make_setup(args)
    task, model, batch, beam = setup.task, setup.model, setup.batch, setup.beam
    src_tokens = int((batch.src_paddings < 0.5).sum())
    tgt_tokens = int((batch.tgt_paddings < 0.5).sum())
    hf_attention = model.config._attn_implementation
    print(
        f"seqlab {args.experiment}: {num_params(task) / 1e6:.2f}M params; MarianMTModel: "
        f"{num_params(model) / 1e6:.2f}M params (transformers {transformers.__version__}, "
        f"attention {hf_attention})"
    )
    print(
        f"torch {torch.__version__}, {args.threads} threads; batch {args.batch_size} sentences "
        f"of {args.min_length}-{args.max_length} tokens: {src_tokens} source + {tgt_tokens} "
        f"target tokens (padded {tuple(batch.src_ids.shape)} / {tuple(batch.tgt_in_ids.shape)})"
    )
    print(
        f"decode: beam {beam.beam_size}, {args.decode_tokens} tokens + EOS forced for both; "
        f"warm-up {args.warmup}, reps {args.reps}"
    )
    for note in notes:
        print(f"note: {note}")
    sys.stdout.flush()

    rows: list[dict[str, Any]] = []
    for precision in args.precisions:
        if "train" in args.phase_list:
            rows += bench_train(setup, precision)
            print(f"[{time.perf_counter() - started:5.0f}s] train {precision} done", flush=True)
        if "decode" in args.phase_list:
            rows += bench_decode(setup, precision)
            print(f"[{time.perf_counter() - started:5.0f}s] decode {precision} done", flush=True)

    print()
    print_table(rows)
    print("HF/seqlab > 1 means seqlab is faster. Times per step/batch; [min-max] over reps.")
    print(
        "tok/s: train = real source + target tokens per step; decode = batch x "
        f"({args.decode_tokens} tokens + EOS) per batch (not multiplied by the beam)."
    )
    if setup.length_rule_ok and "decode" in args.phase_list:
        print(
            "decode_beam_lenrule: seqlab's caches sized by its length rule (as in real "
            "decoding); its HF column repeats decode_beam's HF run."
        )

    profiles: dict[str, str] = {}
    if args.profile and "decode" in args.phase_list:
        profiles["seqlab_decode"] = profile(
            "seqlab decode, fp32" + (" (length-rule caches)" if setup.length_rule_ok else ""),
            functools.partial(setup.seqlab_decode, "none", not setup.length_rule_ok),
        )
        profiles["hf_decode"] = profile(
            "HF generate, fp32", functools.partial(setup.hf_decode, "none")
        )
        for text in profiles.values():
            print(text)

    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.0f}s")
    if args.output:
        result = {
            "args": dict(vars(args)),
            "environment": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "processor": platform.processor(),
                "cpu_count": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "load_average_at_end": os.getloadavg(),
                "hf_attention": hf_attention,
            },
            "models": {
                "seqlab_params": num_params(task),
                "hf_params": num_params(model),
                "differences": notes,
            },
            "batch": {
                "sentences": args.batch_size,
                "source_tokens": src_tokens,
                "target_tokens": tgt_tokens,
                "source_shape": list(batch.src_ids.shape),
                "target_shape": list(batch.tgt_in_ids.shape),
                "decode_tokens_per_sentence": args.decode_tokens + 1,
            },
            "results": rows,
            "profiles": profiles,
            "elapsed_s": elapsed,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
