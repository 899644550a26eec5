"""The ``seqlab`` command: list, inspect, data, train, eval, decode, average, infer, export."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

from seqlab.core.registry import get_experiment, list_experiments
from seqlab.data.corpora.catalog import known_corpora
from seqlab.error_report import UsageError, report
from seqlab.train.experiment import ExperimentConfig


def _load_config(args: argparse.Namespace) -> ExperimentConfig:
    config = get_experiment(args.experiment)
    config.apply_overrides(args.set or [])
    return config


def _add_ema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use the moving average of the weights (default: trainer.use_ema_for_eval)",
    )


def _add_quantize(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8: dynamic int8 Linear layers for CPU inference (seqlab.quant.ptq)",
    )


_INFERENCE_SET_HELP = (
    "override a setting of the run's config for this command, e.g. --set "
    "task.beam_search.beam_size=8 or task.sampler.temperature=0.7 (repeatable); a key that "
    "changes the model's parameters is refused"
)


def _add_set(
    parser: argparse.ArgumentParser,
    helptext: str = "override a config value, e.g. --set trainer.max_steps=100 (repeatable)",
) -> None:
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=helptext)


# ---- commands ---------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_experiments():
        print(name)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from seqlab.train.model_analysis import parameter_table

    config = _load_config(args)
    config.validate()
    preset = get_experiment(args.experiment)
    print(f"# experiment {args.experiment}: full config")
    print(config.to_text(), end="")
    print(f"\n# diff against the registered preset {args.experiment}")
    print(config.diff(preset) or "# (identical)\n", end="")
    print("\n# model analysis")
    print(parameter_table(config.task.build(), max_depth=args.depth))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from seqlab.data.corpora.catalog import corpus_files
    from seqlab.data.mt_data import default_cache_dir

    if args.experiment:
        # The experiment's data as training will read it: tokenizer, then training shards.
        if args.corpus or args.all:
            raise UsageError("pass corpus names (or --all) or --experiment, not both")
        from seqlab.train.experiment_checks import check_experiment

        config = _load_config(args)
        check_experiment(config)
        data = config.data.build()
        start = time.perf_counter()
        data.load_tokenizer()
        print(f"[seqlab] tokenizer: {data.tokenizer_path}")
        examples = data.examples("train")
        shards = getattr(examples, "shards", None)
        where = "held in memory"
        if shards is not None:
            where = f"{shards.directory} ({len(shards)} {shards.kind.name})"
        index = getattr(examples, "index", None)  # speech: the utterance index
        if index is not None:
            where = f"{index.directory} ({len(index)} utterances)"
        if getattr(data.config, "streaming", False):
            where = "streamed from " + ", ".join(str(f) for f in examples.files)
        print(f"[seqlab] training data: {where}; {time.perf_counter() - start:.1f} s")
        return 0
    if bool(args.corpus) == args.all:
        raise UsageError(
            f"name the corpora to prepare ({', '.join(known_corpora())}) or pass --all"
            + (", not both" if args.all else "")
        )
    unknown = [name for name in args.corpus if name not in known_corpora()]
    if unknown:
        raise UsageError(
            f"unknown corpus '{unknown[0]}'; built-in corpora: {', '.join(known_corpora())}"
        )
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    for name in args.corpus or known_corpora():
        files = corpus_files(name, cache, prepare=True)
        for split, path in files.items():
            print(f"{name} {split}: {path}")
    return 0


def _add_device(parser: argparse.ArgumentParser, default: str = "auto", what: str = "") -> None:
    parser.add_argument(
        "--device",
        default=default,
        help=f"auto (CUDA when present, else CPU), cpu, cuda or cuda:N{what} (default {default})",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from seqlab.train.device import resolve_device
    from seqlab.train.mixed_precision import bf16_slowdown_message
    from seqlab.train.trainer import Trainer
    from seqlab.train.world import world_from_env

    if args.nproc < 0:
        raise UsageError(f"--nproc must be >= 1 (or 0: one process), got {args.nproc}")
    config = _load_config(args)
    if args.nproc > 0:
        from seqlab.distributed.launch import exec_torchrun
        from seqlab.train.experiment_checks import check_experiment

        check_experiment(config, args.nproc)  # refused here once, not by every rank

        sets = [a for value in args.set or [] for a in ("--set", value)]
        imports = [a for spec in args.imports for a in ("--import", spec)]
        exec_torchrun(
            args.nproc,
            [*imports, "train", "--experiment", args.experiment, "--logdir", args.logdir, *sets],
        )
    logdir = Path(args.logdir)
    world = world_from_env()
    main_process = world.is_main
    device = resolve_device(config.trainer.device, world)
    message = bf16_slowdown_message(config.trainer.mixed_precision, device)
    if message and main_process:
        print(f"[seqlab] warning: {message}", file=sys.stderr)
    trainer = Trainer(config, logdir, preset=get_experiment(args.experiment))
    trainer.train()
    if main_process:
        checkpoints = logdir / "checkpoints"
        if trainer.stop_reason:
            print(
                f"[seqlab] training done at step {trainer.step} ({trainer.stop_reason}); "
                f"checkpoints in {checkpoints}"
            )
        else:
            print(
                f"[seqlab] training stopped at step {trainer.step}; run the same command to "
                f"resume; checkpoints in {checkpoints}"
            )
    return 0


def _add_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        default="",
        metavar="PATH|STEP",
        help="a checkpoint file, or the step of one of the run's checkpoints (default: the "
        "newest good one)",
    )


def _run_on_checkpoints(args: argparse.Namespace, process: Any) -> int:
    """Runs ``process(context, step, job suffix)`` on the checkpoint --checkpoint names (or
    the newest), or with --follow on every checkpoint as training writes it."""
    from seqlab.train.checkpoint_follower import CheckpointFollower
    from seqlab.train.device import resolve_device

    if args.follow and args.checkpoint:
        raise UsageError("--follow processes every checkpoint; --checkpoint names one: pass one")
    device = resolve_device(args.device, name="--device")
    follower = CheckpointFollower(Path(args.logdir), device, args.ema, args.set or [])
    if args.follow:
        follower.follow(process, args.poll_seconds)
    else:
        follower.run_once(process, args.checkpoint)
    return 0


def _job_name_suffix(name: str) -> str:
    """``_NAME`` for --name NAME (letters, digits, '.', '-', '_'), or '' without one."""
    if name and not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise UsageError(f"--name may hold letters, digits, '.', '-' and '_' only, got {name!r}")
    return f"_{name}" if name else ""


def cmd_eval(args: argparse.Namespace) -> int:
    from seqlab.data.multi_task_data import task_datasets
    from seqlab.train.evaler import evaluate, write_eval_metrics
    from seqlab.train.summaries import Summaries

    summaries = Summaries(Path(args.logdir))

    name_suffix = _job_name_suffix(args.name)

    def process(context: Any, step: int, suffix: str) -> None:
        suffix += name_suffix
        # A multi-task run evaluates each task (or the --task one) on its own: eval_dev_en_es/.
        for dataset in task_datasets(context.data, args.dataset, args.task):
            metrics = evaluate(context, dataset)
            job = f"eval_{dataset}{suffix}"
            summaries.scalars(job, step, metrics)
            write_eval_metrics(Path(args.logdir) / job, step, metrics)
            print(f"step {step} {dataset}: " + json.dumps(metrics))

    return _run_on_checkpoints(args, process)


def cmd_decode(args: argparse.Namespace) -> int:
    from seqlab.data.multi_task_data import task_datasets
    from seqlab.train.decode_runner import decode_dataset, write_decode_outputs
    from seqlab.train.summaries import Summaries

    summaries = Summaries(Path(args.logdir))
    name_suffix = _job_name_suffix(args.name)

    def process(context: Any, step: int, suffix: str) -> None:
        if args.quantize != "none":
            # Decodes a quantized copy; the loop keeps loading checkpoints into the float task.
            from seqlab.quant.ptq import quantize_int8

            context = dataclasses.replace(context, task=quantize_int8(context.task))
            suffix += f"_{args.quantize}"
        suffix += name_suffix
        for dataset in task_datasets(context.data, args.dataset, args.task):
            results, metrics = decode_dataset(context, dataset)
            job = f"decode_{dataset}{suffix}"
            hyps, score = write_decode_outputs(Path(args.logdir) / job, step, results, metrics)
            summaries.scalars(job, step, metrics)
            shown = " ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
            )
            print(f"[seqlab] decode {dataset} at step {step}: {shown}")
            print(f"[seqlab] hypotheses: {hyps}\n[seqlab] score: {score}")

    return _run_on_checkpoints(args, process)


def _load_predictor(args: argparse.Namespace) -> Any:
    """The Predictor of ``--logdir`` or the ArtifactPredictor of ``--artifact`` (infer, serve)."""
    if bool(args.logdir) == bool(args.artifact):
        raise UsageError("pass either --logdir (a training run) or --artifact (seqlab export)")
    if args.artifact and args.checkpoint:
        raise UsageError("--checkpoint picks a checkpoint of a --logdir; an artifact holds one")
    max_tokens = args.max_input_tokens
    for flag, value in (("--batch-size", args.batch_size), ("--max-input-tokens", max_tokens)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    # None: the Predictor's default, or the limit the artifact was exported with.
    limits = {} if max_tokens is None else {"max_input_tokens": max_tokens}
    from seqlab.train.device import resolve_device

    device = resolve_device(args.device, name="--device")
    if args.artifact:
        from seqlab.export.artifact_predictor import ArtifactPredictor

        if args.quantize != "none":
            raise UsageError("an artifact is quantized when exported: seqlab export --quantize")
        if args.set:
            raise UsageError("an artifact's settings are fixed when exported; --set needs --logdir")
        return ArtifactPredictor(
            Path(args.artifact), max_batch_size=args.batch_size, device=device, **limits
        )
    from seqlab.export.predictor import Predictor

    return Predictor.from_logdir(
        Path(args.logdir),
        device=device,
        max_batch_size=args.batch_size,
        task=args.task,
        use_ema=args.ema,
        quantize=args.quantize,
        checkpoint=args.checkpoint,
        overrides=args.set or [],
        **limits,
    )


def cmd_infer(args: argparse.Namespace) -> int:
    from seqlab.export.input_limits import InputTooLargeError
    from seqlab.export.input_text import InputTextError, read_input_lines

    predictor = _load_predictor(args)
    if predictor.is_speech:
        if not args.input:
            raise UsageError("this model transcribes audio: pass --input a.wav [b.wav ...]")
        for start in range(0, len(args.input), args.batch_size):
            paths = args.input[start : start + args.batch_size]
            for path, text in zip(paths, predictor.transcribe(paths), strict=True):
                print(f"{path}\t{text}", flush=True)
        return 0
    if len(args.input) > 1 or (args.input and args.prompt):
        raise UsageError("a text model reads one --input file, --prompt texts, or stdin")
    source = args.input[0] if args.input else "--prompt" if args.prompt else "<stdin>"
    try:
        if args.prompt:  # a language model continues each prompt
            raw = "".join(f"{p}\n" for p in args.prompt).encode()
        else:
            raw = Path(source).read_bytes() if args.input else sys.stdin.buffer.read()
    except OSError as e:
        raise UsageError(f"cannot read --input {source}: {e.strerror or e}") from None
    lines = read_input_lines(raw, source)
    for start in range(0, len(lines), args.batch_size):
        try:
            outputs = predictor.predict(lines[start : start + args.batch_size])
        except InputTooLargeError as e:
            if e.index is None:
                raise
            problem = str(e).replace(f"input {e.index} ", "the line ", 1)
            raise InputTextError(
                f"{source}:{start + e.index + 1}: {problem} (--max-input-tokens)"
            ) from None
        for out in outputs:
            print(" ".join(out.splitlines()), flush=True)  # one output line per input line
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from seqlab.serve.app import ServeSettings
        from seqlab.serve.http_server import bind_socket, serve
        from seqlab.serve.served_model import ServedModel
    except ImportError as e:
        raise UsageError(
            f"seqlab serve needs {e.name}: pip install 'seqlab[serve]' (scripts/setup.sh does)"
        ) from None
    settings = ServeSettings(
        batch_window_ms=args.batch_window_ms,
        max_batch_tokens=args.max_batch_tokens,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout,
        max_body_bytes=args.max_body_bytes,
    )
    try:
        settings.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    try:  # the address is checked before the model loads
        bind_socket(args.host, args.port).close()
    except OSError as e:
        raise UsageError(f"--host {args.host} --port {args.port}: {e.strerror or e}") from None
    serve(
        lambda: ServedModel(_load_predictor(args)),
        settings,
        args.host,
        args.port,
        access_log=args.access_log,
    )
    return 0


def _step_list(text: str) -> list[int]:
    """--steps 100,200,300 -> [100, 200, 300]."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected steps separated by commas, e.g. 100,200,300; got {text!r}"
        ) from None
    if not steps:
        raise argparse.ArgumentTypeError("expected at least one step")
    return steps


def cmd_average(args: argparse.Namespace) -> int:
    from seqlab.train.checkpoint_average import write_average

    if bool(args.last) == bool(args.steps):
        raise UsageError("pass --last N (the newest N checkpoints) or --steps S1,S2,...")
    directory = Path(args.logdir) / "checkpoints"
    if not directory.is_dir():
        raise UsageError(f"{directory} not found: is {args.logdir} a training logdir?")
    output = Path(args.output) if args.output else None
    path, steps = write_average(directory, args.last, args.steps, output)
    print(
        f"[seqlab] averaged the checkpoints of steps {', '.join(map(str, steps))} into {path}; "
        f"use it with --checkpoint {path}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from seqlab.export.exporter import export_artifact

    out = export_artifact(
        Path(args.logdir),
        Path(args.out),
        args.format,
        args.quantize,
        max_batch_size=args.max_batch_size,
        max_input_tokens=args.max_input_tokens,
        checkpoint=args.checkpoint,
        device=args.device,
        overrides=args.set or [],
    )
    print(f"[seqlab] {args.format} artifact ({args.quantize}) written to {out}")
    return 0


# ---- entry point ------------------------------------------------------------------------------


def _add_model_source(parser: argparse.ArgumentParser, batch_help: str) -> None:
    """The flags of infer and serve that choose and load a model (``_load_predictor``)."""
    parser.add_argument("--logdir", default="", help="a training run (or use --artifact)")
    parser.add_argument(
        "--artifact", default="", help="an artifact from seqlab export (torch, onnx, ctranslate2)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help=batch_help)
    parser.add_argument(
        "--max-input-tokens",
        type=int,
        default=None,
        help="refuse longer input lines (tokens with EOS; default 256, or the artifact's limit)",
    )
    parser.add_argument("--task", default="", help="multi-task runs: the task to run (required)")
    _add_checkpoint(parser)
    _add_ema(parser)
    _add_quantize(parser)
    _add_device(parser)
    _add_set(parser, _INFERENCE_SET_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqlab", description=__doc__)
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="import your own code first (a dotted module, a .py file or a package directory) "
        "so that its experiments, tasks and data are known; repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the registered experiments")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("inspect", help="print an experiment's config, its diff and model size")
    p.add_argument("--experiment", required=True)
    p.add_argument("--depth", type=int, default=2, help="submodule depth of the table")
    _add_set(p)
    p.set_defaults(fn=cmd_inspect)

    corpora = known_corpora()
    p = sub.add_parser("data", help="prepare built-in corpora into the cache")
    p.add_argument("action", choices=["prepare"])
    p.add_argument(
        "corpus",
        nargs="*",
        metavar="CORPUS",
        help=f"the corpora to prepare: {', '.join(corpora)}",
    )
    p.add_argument(
        "--all", action="store_true", help="prepare every corpus (flite_bible is about 1 GB)"
    )
    p.add_argument("--cache-dir", default="")
    p.add_argument(
        "--experiment",
        default="",
        help="prepare this experiment's data instead: its tokenizer and training shards",
    )
    _add_set(p)
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("train", help="train (and evaluate/decode at intervals)")
    p.add_argument("--experiment", required=True)
    p.add_argument("--logdir", required=True)
    p.add_argument(
        "--nproc",
        type=int,
        default=0,
        help="train with N processes on this machine (runs the same command under torchrun)",
    )
    _add_set(p)
    p.set_defaults(fn=cmd_train)

    for name, fn, helptext in (
        ("eval", cmd_eval, "teacher-forced loss of the latest (or every new) checkpoint"),
        ("decode", cmd_decode, "decode and score the latest (or every new) checkpoint"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--logdir", required=True)
        p.add_argument("--dataset", default="dev")
        p.add_argument("--task", default="", help="multi-task runs: only this task (default: all)")
        p.add_argument(
            "--follow",
            action="store_true",
            help="process every checkpoint in step order as training writes it; exit when "
            "training has finished",
        )
        _add_checkpoint(p)
        p.add_argument("--poll-seconds", type=float, default=30.0)
        _add_ema(p)
        _add_device(p)
        _add_set(p, _INFERENCE_SET_HELP)
        p.add_argument(
            "--name",
            default="",
            help=f"write into {name}_<dataset>_NAME/ instead of {name}_<dataset>/, so that "
            "results with other --set settings keep their own files",
        )
        if name == "decode":
            _add_quantize(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser(
        "infer", help="translate lines from stdin or --input, or transcribe --input audio files"
    )
    _add_model_source(p, batch_help="inputs decoded together")
    p.add_argument(
        "--input", nargs="*", default=[], help="a text file, or audio files (one transcript each)"
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="a text to continue (language models) or to process, instead of stdin; repeatable",
    )
    p.set_defaults(fn=cmd_infer)

    p = sub.add_parser(
        "serve",
        help="an HTTP server for a model (translate, generate or transcribe) with dynamic "
        "batching, metrics and a demo page",
    )
    _add_model_source(p, batch_help="most requests decoded in one batch")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=8080, help="port (0: a free one, printed)")
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=5.0,
        help="how long the first request of a batch waits for others to join it",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=8192,
        help="a batch's padded size: largest input tokens (speech: 10 ms frames) x inputs",
    )
    p.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond it get 503")
    p.add_argument(
        "--request-timeout", type=float, default=60.0, help="seconds before a 504 answer"
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413"
    )
    p.add_argument("--access-log", action="store_true", help="print a line per request")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser(
        "average", help="average the weights of several checkpoints into one checkpoint file"
    )
    p.add_argument("--logdir", required=True)
    p.add_argument("--last", type=int, default=0, help="the newest N checkpoints")
    p.add_argument(
        "--steps", type=_step_list, default=None, help="these steps, e.g. 1000,1500,2000"
    )
    p.add_argument(
        "--output",
        default="",
        help="the file to write (default: LOGDIR/checkpoints/averaged-<steps>.pt, which "
        "keep-last rotation never deletes)",
    )
    p.set_defaults(fn=cmd_average)

    p = sub.add_parser("export", help="write a self-contained inference artifact of a run")
    p.add_argument("--logdir", required=True)
    p.add_argument("--format", required=True, choices=["torch", "onnx", "ctranslate2"])
    p.add_argument("--out", required=True, help="the artifact directory to create")
    p.add_argument("--max-batch-size", type=int, default=64, help="texts per predict call")
    p.add_argument("--max-input-tokens", type=int, default=256, help="tokens per input text")
    _add_checkpoint(p)
    _add_quantize(p)
    _add_device(p, "cpu", "; the model is traced there, the artifact runs on any device")
    _add_set(p, _INFERENCE_SET_HELP)
    p.set_defaults(fn=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="[seqlab] %(message)s")
    args = build_parser().parse_args(argv)
    from seqlab.core.heap_retention import retain_freed_heap_memory

    retain_freed_heap_memory()
    try:
        from seqlab.core.user_modules import import_user_module

        for spec in args.imports:
            import_user_module(spec)
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"seqlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a user error in one line; anything else with its traceback file
        return report(args.command, e, getattr(args, "logdir", ""))


if __name__ == "__main__":
    sys.exit(main())
