# ruff: noqa: E501 (the case tables keep one case a line)
"""Every user error the command line can meet: each gives a non-zero exit code and exactly
one ``seqlab CMD: error: ...`` line naming the key, file or flag, and no traceback; an
unexpected error gives one line and the file that holds its traceback; a multi-process job
prints a worker's error once.

Each case runs the command line's ``main`` in a child process forked from this one (so that
torch is imported once, not once per case: the config and data checks answer in
milliseconds), with its stdout and stderr read back; a few run as ``python -m seqlab`` to
cover the entry point and torchrun. All share one tiny data set.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from seqlab.cli import main

EXPERIMENT = "mt.bible_en_es.transformer_tiny"
VOCAB = 120


def seqlab(*args: str, cwd: Path | None = None, timeout: float = 180) -> tuple[int, str]:
    """Runs ``python -m seqlab ARGS``; returns the exit code and stdout + stderr."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "seqlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def seqlab_forked(args: list[str], output: Path) -> tuple[int, str]:
    """Runs ``seqlab ARGS`` (``seqlab.cli.main``, as ``python -m seqlab`` does) in a forked
    child whose stdout and stderr go to ``output``; returns its exit code and output. An
    exception escaping ``main`` is printed with its traceback, as Python would."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(fd, "w", buffering=1)  # noqa: SIM115
            for handler in logging.root.handlers[:]:  # pytest's; main() installs its own
                logging.root.removeHandler(handler)
            code = main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.read_text()


def _write_pairs(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(150)]
    lines = []
    for _ in range(count):
        source = " ".join(rng.choices(words, k=rng.randint(3, 9)))
        lines.append(f"{source}\t{source.upper()}\n")
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/dev/test pairs, an empty file, a directory, a file of blank lines, a file with
    a bad line, and a cache; small enough that a tokenizer trains in a second."""
    root = tmp_path_factory.mktemp("user_errors")
    _write_pairs(root / "train.tsv", 300, seed=0)
    _write_pairs(root / "dev.tsv", 20, seed=1)
    _write_pairs(root / "test.tsv", 20, seed=2)
    (root / "empty.tsv").write_text("")
    (root / "blank.tsv").write_text("\n \n\n")
    (root / "bad.tsv").write_text("a\tb\tc\n" + (root / "train.tsv").read_text())
    (root / "adir").mkdir()
    (root / "boom.py").write_text(
        "from seqlab.core.registry import register_experiment\n\n"
        "@register_experiment('boom')\n"
        "def boom():\n"
        "    return 1 / 0\n"
    )
    return root


def own_data(root: Path, **paths: str) -> list[str]:
    """``--set`` flags that train transformer_tiny on ``root``'s files for 2 steps."""
    chosen = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv", **paths}
    sets = [
        "data.corpus=",
        f"data.cache_dir={root / 'cache'}",
        *(f"data.{split}_path={root / name}" for split, name in chosen.items()),
        f"data.tokenizer.vocab_size={VOCAB}",
        f"task.embedding.vocab_size={VOCAB}",
        "trainer.max_steps=2",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "data.max_tokens=256",
    ]
    return [a for s in sets for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(files: Path) -> Path:
    """A logdir trained 2 steps on the shared files."""
    logdir = files / "trained"
    code, out = seqlab(
        "train", "--experiment", EXPERIMENT, "--logdir", str(logdir), *own_data(files)
    )
    assert code == 0, out
    return logdir


@pytest.fixture(scope="module")
def corrupt(trained: Path, files: Path) -> Path:
    """A copy of the trained logdir whose every checkpoint is junk."""
    logdir = files / "corrupt"
    subprocess.run(["cp", "-r", str(trained), str(logdir)], check=True)
    for path in (logdir / "checkpoints").glob("ckpt-*"):
        path.write_bytes(b"junk")
    return logdir


# Training runs on the shared files (the own-data flags), each with these --set flags:
# "KEY=VALUE ... | what the one error line must contain"; {root} is the files' directory.
TRAIN_CASES = """
trainer.schedule.kind=bogus | 'trainer.schedule.kind'
trainer.mixed_precision=fp16 | 'trainer.mixed_precision'
trainer.distributed.strategy=zero3 | 'trainer.distributed.strategy'
trainer.distributed.backend=mpi | 'trainer.distributed.backend'
trainer.nan_policy=ignore | 'trainer.nan_policy'
task.encoder.layer.ffn.activation=tanh | 'task.encoder.layer.ffn.activation'
data.tokenizer.model_type=wordpiece | 'data.tokenizer.model_type'
trainer.optimizer.cls=Adamm | 'trainer.optimizer.cls'
trainer.grad_accum_steps=0 | 'trainer.grad_accum_steps' must be >= 1
task.encoder.num_layers=0 | 'task.encoder.num_layers' must be >= 1
task.encoder.num_layers=-1 | 'task.encoder.num_layers' must be >= 1
task.decoder.num_layers=0 | 'task.decoder.num_layers' must be >= 1
data.max_tokens=0 | 'data.max_tokens' must be >= 1
data.eval_max_tokens=-5 | 'data.eval_max_tokens' must be >= 1
trainer.max_steps=0 | 'trainer.max_steps' must be >= 1
trainer.ema.decay=1.0 | 'trainer.ema.decay' must be >= 0 and < 1
trainer.schedule.peak_learning_rate=0 | 'trainer.schedule.peak_learning_rate' must be > 0
trainer.optimizer.beta1=1.5 | 'trainer.optimizer.beta1' must be >= 0 and < 1
task.embedding.vocab_size=0 | 'task.embedding.vocab_size' must be >= 1
trainer.prefetch_batches=-2 | 'trainer.prefetch_batches' must be >= -1
trainer.distributed.timeout_seconds=0 | 'trainer.distributed.timeout_seconds' must be > 0
task.input_dropout_prob=1.0 | 'task.input_dropout_prob' must be >= 0 and < 1
trainer.log_every_steps=0 | 'trainer.log_every_steps' must be >= 1
task.loss.label_smoothing=-0.1 | label_smoothing' must be >= 0 and < 1
task.encoder.layer.self_attention.num_heads=0 | num_heads' must be >= 1
trainer.optimizer.weight_decay=-1 | 'trainer.optimizer.weight_decay' must be >= 0
trainer.distributed.strategy=fsdp | trainer.distributed.strategy=fsdp needs several processes
trainer.distributed.strategy=ddp | trainer.distributed.strategy=ddp needs several processes
trainer.distributed.strategy=pipeline | trainer.distributed.strategy=pipeline needs several processes
task.embedding.vocab_size=100 | task.embedding.vocab_size=100 is smaller than data.tokenizer.vocab_size=120
data.tokenizer.vocab_size=4000 task.embedding.vocab_size=4000 | data.tokenizer.vocab_size=4000 is too large for the training data: at most
trainer.init_from_checkpoint={root}/nosuch | trainer.init_from_checkpoint={root}/nosuch: no such file
data.corpus=nosuch | data.corpus=nosuch: unknown corpus
data.tokenizer.model_path={root}/nosuch.model | data.tokenizer.model_path={root}/nosuch.model: no such file
data.train_path={root}/empty.tsv | data.train_path={root}/empty.tsv: the file is empty
data.train_path={root}/nosuch.tsv | data.train_path={root}/nosuch.tsv: no such file
data.train_path={root}/adir | data.train_path={root}/adir: is a directory
data.train_path={root}/blank.tsv | no text to train data.tokenizer on
data.train_path={root}/bad.tsv | {root}/bad.tsv:1: expected 2 tab-separated fields
data.dev_path={root}/nosuch.tsv | data.dev_path={root}/nosuch.tsv: no such file
data.dev_path={root}/empty.tsv | data.dev_path={root}/empty.tsv: the file is empty
data.dev_path={root}/adir | data.dev_path={root}/adir: is a directory
data.test_path={root}/nosuch.tsv | data.test_path={root}/nosuch.tsv: no such file
task.encoder.num_layer=2 | did you mean 'task.encoder.num_layers'
trainer.max_steps=ten | 'trainer.max_steps' expects an int
trainer.max_steps | must look like 'a.b.c=value'
"""

# Other commands: "NAME: ARGS | what the error line must contain"; {trained} is a trained
# logdir, {corrupt} one whose checkpoints are all junk, {logdir} a fresh directory; a
# train command gets the experiment, a logdir and the own-data flags before its ARGS.
OTHER_CASES = """
nproc_fsdp_ema: train --nproc 2 --set trainer.distributed.strategy=fsdp --set trainer.ema.decay=0.9 | trainer.ema.decay do not work with trainer.distributed.strategy=fsdp
nproc_fsdp_weight_noise: train --nproc 2 --set trainer.distributed.strategy=fsdp --set trainer.weight_noise.std=0.1 | trainer.weight_noise.std do not work with
nproc_zero3: train --nproc 2 --set trainer.distributed.strategy=zero3 | 'trainer.distributed.strategy'
nproc_tensor_heads: train --nproc 4 --set trainer.distributed.strategy=tensor | task.encoder.layer.self_attention.num_heads=2 is not divisible by the tensor-parallel degree 4
nproc_tensor_ffn: train --nproc 2 --set trainer.distributed.strategy=tensor --set task.decoder.layer.ffn.hidden_dim=127 | task.decoder.layer.ffn.hidden_dim=127 is not divisible
nproc_tensor_mesh: train --nproc 4 --set trainer.distributed.strategy=tensor --set trainer.distributed.mesh=[2,3] | trainer.distributed.mesh=[2, 3] makes 6 processes, but the job has 4
nproc_tensor_qat: train --nproc 2 --set trainer.distributed.strategy=tensor --set quant.mode=qat | quant.mode=qat does not work with trainer.distributed.strategy=tensor
tensor_one_process: train --set trainer.distributed.strategy=tensor | trainer.distributed.strategy=tensor needs several processes
nproc_none: train --nproc 2 --set trainer.distributed.strategy=none | trainer.distributed.strategy=none, but the job has 2 processes
nproc_pipeline_stages: train --nproc 5 --set trainer.distributed.strategy=pipeline | 5 stages (processes) but the model has 4 layers
nproc_pipeline_microbatches: train --nproc 2 --set trainer.distributed.strategy=pipeline --set trainer.distributed.pipeline_microbatches=1 | pipeline_microbatches=1 is fewer than the 2 pipeline stages
nproc_pipeline_boundaries: train --nproc 2 --set trainer.distributed.strategy=pipeline --set trainer.distributed.pipeline_boundaries=[4] | pipeline_boundaries=[4]: give 1 increasing
nproc_negative: train --nproc -1 | --nproc must be >= 1
nproc_missing_train: train --nproc 2 --set data.train_path={root}/nosuch.tsv | data.train_path={root}/nosuch.tsv: no such file
unknown_experiment: train --experiment nosuch --logdir {logdir} | nosuch
prepare_unknown_corpus: data prepare nosuchcorpus | unknown corpus 'nosuchcorpus'
prepare_experiment_bad_set: data prepare --experiment {experiment} --set data.max_tokens=0 | 'data.max_tokens' must be >= 1
prepare_experiment_missing_file: data prepare --experiment {experiment} --set data.corpus= --set data.train_path={root}/nosuch.tsv | data.train_path={root}/nosuch.tsv: no such file
inspect_bad_kind: inspect --experiment {experiment} --set trainer.schedule.kind=bogus | 'trainer.schedule.kind'
inspect_layers_0: inspect --experiment {experiment} --set task.encoder.num_layers=0 | 'task.encoder.num_layers' must be >= 1
eval_unknown_dataset: eval --logdir {trained} --dataset nosuch | --dataset nosuch: no such dataset
decode_unknown_dataset: decode --logdir {trained} --dataset nosuch | --dataset nosuch: no such dataset
decode_beam_0: decode --logdir {trained} --set task.beam_search.beam_size=0 | beam_size' must be >= 1
eval_no_logdir: eval --logdir {root}/nosuch | {root}/nosuch/config.json not found
eval_bad_device: eval --logdir {trained} --device gpu7 | --device='gpu7'
eval_task_single: eval --logdir {trained} --task en_es | --task en_es: this run trains a single task
infer_all_corrupt: infer --logdir {corrupt} --prompt w1 | can be read (each is named above, and kept)
eval_all_corrupt: eval --logdir {corrupt} | can be read (each is named above, and kept)
export_all_corrupt: export --logdir {corrupt} --format torch --out {logdir} | can be read (each is named above, and kept)
infer_missing_input: infer --logdir {trained} --input {root}/nosuch.txt | cannot read --input {root}/nosuch.txt
infer_batch_0: infer --logdir {trained} --batch-size 0 --prompt x | --batch-size must be at least 1
infer_no_source: infer | pass either --logdir
infer_missing_artifact: infer --artifact {root}/nosuch --prompt x | {root}/nosuch
import_missing: --import {root}/nosuch.py list | --import {root}/nosuch.py: no such file
"""


def parse_cases(table: str) -> list[tuple[str, str, list[str]]]:
    """(name, expected, args) of each line of a case table."""
    cases = []
    for line in table.strip().splitlines():
        head, _, expected = line.partition(" | ")
        name, colon, args = head.partition(": ")
        if not colon:  # a training case: its --set flags, named by the first
            name, args = head.split()[0], " ".join(f"--set {s}" for s in head.split())
        cases.append((name, expected, args.split()))
    return cases


def _fill(text: str, places: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in places.items()})


def _check(name: str, expected: str, code: int, out: str) -> str:
    """ "" when ``out`` is one error line containing ``expected`` and no traceback; else the
    problem. Lines seqlab logs on the way (``[seqlab] ...``, e.g. a skipped checkpoint) may
    come before it."""
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith("[seqlab]")]
    if "Traceback" in out:
        return f"{name}: a traceback:\n{out[-3000:]}"
    if code == 0 or len(lines) != 1 or not lines[0].startswith("seqlab "):
        return f"{name}: exit code {code}, expected one error line, got:\n{out[-3000:]}"
    if ": error: " not in lines[0] or expected not in lines[0]:
        return f"{name}: expected {expected!r} in {lines[0]!r}"
    return ""


def test_no_bad_input_prints_a_traceback(
    files: Path, trained: Path, corrupt: Path, tmp_path: Path
) -> None:
    places = {"root": files, "trained": trained, "corrupt": corrupt, "logdir": tmp_path / "run"}
    places["experiment"] = Path(EXPERIMENT)
    own = own_data(files)
    runs = []
    for i, (name, expected, args) in enumerate(parse_cases(TRAIN_CASES) + parse_cases(OTHER_CASES)):
        args = [_fill(a, places) for a in args]
        if args[0] in ("train", "--set") and "--experiment" not in args:
            # The case's own flags go last: a later --set wins.
            flags = args[1:] if args[0] == "train" else args
            logdir = str(tmp_path / f"run{i}")
            args = ["train", "--experiment", EXPERIMENT, "--logdir", logdir, *own, *flags]
        runs.append((name, _fill(expected, places), args))
    results = [seqlab_forked(run[2], tmp_path / f"run{i}.out") for i, run in enumerate(runs)]
    problems = [
        problem
        for (name, expected, _), (code, out) in zip(runs, results, strict=True)
        if (problem := _check(name, expected, code, out))
    ]
    assert not problems, "\n\n".join(problems)
    # docs/reliability.md states how many bad inputs this test tries.
    assert len(runs) == 80


def test_an_unexpected_error_prints_one_line_and_where_its_traceback_is(files: Path) -> None:
    code, out = seqlab("--import", str(files / "boom.py"), "inspect", "--experiment", "boom")
    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in out, out
    assert lines[0].startswith(
        "seqlab inspect: internal error: ZeroDivisionError: division by zero"
    )
    path = Path(lines[0].rsplit("(full traceback in ", 1)[1].rstrip(")"))
    text = path.read_text()
    assert text.startswith("Traceback") and "return 1 / 0" in text
    path.unlink()


@pytest.mark.slow
def test_a_worker_error_is_printed_once_for_the_whole_job(files: Path, tmp_path: Path) -> None:
    """A bad training line, found by rank 0 while the other rank waits for it: one line, not
    one per rank, and no torchrun failure report or traceback of the rank that lost its peer."""
    args = own_data(files, train="bad.tsv")
    code, out = seqlab(
        "train", "--nproc", "2", "--experiment", EXPERIMENT, "--logdir", str(tmp_path), *args
    )
    assert _check("nproc_bad_line", f"{files}/bad.tsv:1: expected 2", code, out) == "", out


def test_the_entry_point_prints_one_line_too(files: Path, tmp_path: Path) -> None:
    """A few of the cases through ``python -m seqlab`` itself (and, for --nproc, up to the
    refusal before torchrun starts)."""
    own = own_data(files)
    cases = [
        ("'trainer.schedule.kind'", ["train", "--set", "trainer.schedule.kind=bogus"]),
        (
            "do not work with",
            [
                "train",
                "--nproc",
                "2",
                "--set",
                "trainer.distributed.strategy=fsdp",
                "--set",
                "trainer.ema.decay=0.9",
            ],
        ),
        ("unknown corpus 'nosuchcorpus'", ["data", "prepare", "nosuchcorpus"]),
    ]
    for expected, args in cases:
        if args[0] == "train":
            args = ["train", "--experiment", EXPERIMENT, "--logdir", str(tmp_path), *own, *args[1:]]
        code, out = seqlab(*args)
        assert _check(args[0], expected, code, out) == "", out
