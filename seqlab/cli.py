"""The ``seqlab`` command: list, inspect, data, train, eval, decode, infer."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from seqlab.core.config import ConfigError
from seqlab.core.registry import UnknownExperimentError, get_experiment, list_experiments
from seqlab.train.experiment import ExperimentConfig


class UsageError(RuntimeError):
    """A problem with what the user asked for; printed without a traceback."""


def _load_config(args: argparse.Namespace) -> ExperimentConfig:
    config = get_experiment(args.experiment)
    config.apply_overrides(args.set or [])
    return config


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set trainer.max_steps=100 (repeatable)",
    )


# ---- commands ---------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_experiments():
        print(name)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from seqlab.train.model_analysis import parameter_table

    config = _load_config(args)
    preset = get_experiment(args.experiment)
    print(f"# experiment {args.experiment}: full config")
    print(config.to_text(), end="")
    print(f"\n# diff against the registered preset {args.experiment}")
    print(config.diff(preset) or "# (identical)\n", end="")
    print("\n# model analysis")
    print(parameter_table(config.task.build(), max_depth=args.depth))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from seqlab.data.corpora.catalog import corpus_files, known_corpora
    from seqlab.data.mt_data import default_cache_dir

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    names = args.corpus or known_corpora()
    for name in names:
        files = corpus_files(name, cache, prepare=True)
        for split, path in files.items():
            print(f"{name} {split}: {path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from seqlab.train.trainer import Trainer

    config = _load_config(args)
    logdir = Path(args.logdir)
    trainer = Trainer(config, logdir)
    trainer.train()
    print(f"[seqlab] training done at step {trainer.step}; checkpoints in {logdir / 'checkpoints'}")
    return 0


def _follow_loop(args: argparse.Namespace, job: str, process: Any) -> int:
    """Processes the latest checkpoint, or with --follow every new one until max_steps."""
    from seqlab.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
    from seqlab.train.run_context import build_context, read_logdir_config

    logdir = Path(args.logdir)
    config = read_logdir_config(logdir)
    context = build_context(config, logdir, train_tokenizer=False)
    done: set[int] = set()
    while True:
        checkpoints = list_checkpoints(context.checkpoint_dir)
        todo = [c for c in checkpoints if c[0] not in done]
        if not args.follow:
            todo = todo[-1:]
            if not todo:
                raise UsageError(
                    f"no checkpoint in {context.checkpoint_dir}; "
                    f"train first (`seqlab train --experiment NAME --logdir {logdir}`)"
                )
        for step, path in reversed(todo):
            try:
                payload = load_checkpoint(path)
            except CheckpointError as e:
                print(f"[seqlab] {e}; skipped", file=sys.stderr)
                done.add(step)
                continue
            context.task.load_state_dict(payload["model"])
            process(context, step)
            done.add(step)
            if not args.follow:
                return 0
            break  # newest first; then look again for anything newer
        if args.follow:
            if done and max(done) >= config.trainer.max_steps:
                return 0
            time.sleep(args.poll_seconds)


def cmd_eval(args: argparse.Namespace) -> int:
    from seqlab.train.evaler import evaluate
    from seqlab.train.summaries import Summaries

    summaries = Summaries(Path(args.logdir))

    def process(context: Any, step: int) -> None:
        metrics = evaluate(context, args.dataset)
        job = f"eval_{args.dataset}"
        summaries.scalars(job, step, metrics)
        out = Path(args.logdir) / job / f"metrics-{step:08d}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"step": step, **metrics}, indent=1) + "\n")
        print(f"step {step} {args.dataset}: " + json.dumps(metrics))

    return _follow_loop(args, "eval", process)


def cmd_decode(args: argparse.Namespace) -> int:
    from seqlab.train.decode_runner import decode_dataset, write_decode_outputs
    from seqlab.train.summaries import Summaries

    summaries = Summaries(Path(args.logdir))

    def process(context: Any, step: int) -> None:
        for override in args.set or []:
            key, _, value = override.partition("=")
            if not key.startswith("task."):
                raise UsageError(f"decode --set only takes task.* keys, got '{key}'")
            context.task.config.set(key.removeprefix("task."), value)
        results, metrics = decode_dataset(context, args.dataset)
        job = f"decode_{args.dataset}"
        hyps, score = write_decode_outputs(Path(args.logdir) / job, step, results, metrics)
        summaries.scalars(job, step, metrics)
        shown = " ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        print(f"[seqlab] decode {args.dataset} at step {step}: {shown}")
        print(f"[seqlab] hypotheses: {hyps}\n[seqlab] score: {score}")

    return _follow_loop(args, "decode", process)


def cmd_infer(args: argparse.Namespace) -> int:
    from seqlab.export.predictor import Predictor

    predictor = Predictor.from_logdir(Path(args.logdir), max_batch_size=args.batch_size)
    stream = open(args.input, encoding="utf-8") if args.input else sys.stdin
    try:
        lines = [line.rstrip("\n") for line in stream]
    finally:
        if args.input:
            stream.close()
    for start in range(0, len(lines), args.batch_size):
        for out in predictor.predict(lines[start : start + args.batch_size]):
            print(out, flush=True)
    return 0


# ---- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered experiments")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("inspect", help="print an experiment's config, its diff and model size")
    p.add_argument("--experiment", required=True)
    p.add_argument("--depth", type=int, default=2, help="submodule depth of the table")
    _add_set(p)
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("data", help="prepare built-in corpora into the cache")
    p.add_argument("action", choices=["prepare"])
    p.add_argument("corpus", nargs="*", help="corpus names (default: all)")
    p.add_argument("--cache-dir", default="")
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("train", help="train (and evaluate/decode at intervals)")
    p.add_argument("--experiment", required=True)
    p.add_argument("--logdir", required=True)
    _add_set(p)
    p.set_defaults(fn=cmd_train)

    for name, fn, helptext in (
        ("eval", cmd_eval, "teacher-forced loss of the latest (or every new) checkpoint"),
        ("decode", cmd_decode, "decode and score the latest (or every new) checkpoint"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--logdir", required=True)
        p.add_argument("--dataset", default="dev")
        p.add_argument("--follow", action="store_true", help="process each new checkpoint")
        p.add_argument("--poll-seconds", type=float, default=30.0)
        if name == "decode":
            _add_set(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser("infer", help="translate lines from stdin or --input to stdout")
    p.add_argument("--logdir", required=True)
    p.add_argument("--input", default="")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(fn=cmd_infer)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="[seqlab] %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, UnknownExperimentError, UsageError) as e:
        print(f"seqlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        # Our own errors carry messages meant for the user (file, line, key, command to run).
        if type(e).__module__.startswith("seqlab"):
            print(f"seqlab {args.command}: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
