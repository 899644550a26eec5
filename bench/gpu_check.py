#!/usr/bin/env python
"""The GPU check (issue 15): seqlab's CUDA paths end to end on a machine with one NVIDIA GPU.

Run through ``scripts/gpu_check.sh`` (which sets ``PYTHONPATH`` to the checkout; nothing is
installed). Parts, each in its own process, each run whatever happened before it:

1. the CUDA-marked tests (``pytest -m cuda`` on the test files that carry the mark);
2. 300 steps of ``mt.bible_en_es.transformer_base`` in bfloat16 on the GPU (warm-up cut to 100
   steps, so that its BLEU means something): tokens/s and
   model-FLOPs utilisation against the GPU's bf16 dense peak;
3. one training step of seqlab and of Hugging Face's ``MarianMTModel`` of the same shape on the
   same real training batches (``bench/bench_transformer_vs_marian.py``), and the FLOPs per
   token that part 2's MFU uses, counted by ``torch.utils.flop_counter.FlopCounterMode``;
4. ``seqlab decode --dataset test --device cuda`` (beam 4) of part 2's checkpoint;
5. that GPU checkpoint resumed on the CPU for 3 more steps;
6. a 2-process DDP run of ``transformer_tiny`` on 2 GPUs (skipped with fewer);
7. the same with ``trainer.distributed.strategy=pipeline``: two stages, NCCL between the
   GPUs (skipped with fewer); its loss and tokens/s.

Then a one-screen summary, also written to ``--out`` (default ``$OUT``, else
``./gpu_check_out``) with the full log and a JSON of every number; the exit status is 1 if
any part failed. ``--cpu-rehearsal`` runs the same parts on the CPU with tiny sizes.

    python bench/gpu_check.py --prepare DIR                   # once, where the corpus can be made
    python bench/gpu_check.py DIR [--cpu-rehearsal] [--out OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
BASE = "mt.bible_en_es.transformer_base"
TINY = "mt.bible_en_es.transformer_tiny"
CORPUS = "bible_en_es"

# bf16 dense peak (TFLOP/s, no sparsity) by GPU; matched in order against the device name.
PEAK_BF16_TFLOPS: tuple[tuple[str, float | None], ...] = (
    (r"\bNVL\b", None),  # H100/H200 NVL cards have their own (lower) figures
    (r"\bGH200\b", None),
    (r"\bH100\b.*\bPCIe\b", 756.0),
    (r"\bH100\b", 989.0),  # SXM (HBM3)
    (r"\bH200\b", 989.0),
    (r"\bA100\b", 312.0),
    (r"\bL4\b", 121.0),
)

# Modules the parts import: name -> (what needs it, whether seqlab's MT paths run without it).
# seqlab imports soundfile, jiwer and scipy.signal only where speech models use them.
MODULES: dict[str, tuple[str, bool]] = {
    "torch": ("everything", False),
    "numpy": ("seqlab", False),
    "sentencepiece": ("seqlab", False),
    "sacrebleu": ("seqlab", False),
    "tensorboard": ("seqlab", False),
    "tqdm": ("seqlab", False),
    "pytest": ("part 1", False),
    "transformers": ("part 3 (Marian)", False),
    "soundfile": ("speech models only (imported on use)", True),
    "jiwer": ("speech models only (imported on use)", True),
    "scipy.signal": ("speech models only (imported on use)", True),
    "ctranslate2": ("nothing here (seqlab export)", False),
    "pyarrow": ("nothing here", False),
}
SEQLAB_MODULES = ("torch", "numpy", "sentencepiece", "sacrebleu", "tensorboard", "tqdm")
TEST_CACHE_VARIABLE = "SEQLAB_TEST_CACHE_DIR"


# ---- the plan ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Plan:
    """Sizes, settings and time limits of one check: the GPU one or the CPU rehearsal."""

    rehearsal: bool
    device: str
    train_steps: int
    resume_steps: int
    train_sets: list[str]
    bench_batches: int
    bench_reps: int
    two_gpu_steps: int
    two_gpu_sets: list[str]
    timeouts: dict[str, float]
    budget_seconds: float

    @classmethod
    def gpu(cls) -> Plan:
        return cls(
            rehearsal=False,
            device="cuda",
            train_steps=300,
            resume_steps=303,
            # 300 steps would sit inside the preset's 4,000-step warm-up (BLEU about 0).
            train_sets=["trainer.schedule.warmup_steps=100"],
            bench_batches=4,
            bench_reps=3,
            two_gpu_steps=20,
            two_gpu_sets=[],
            timeouts={
                "tests": 200,
                "train": 240,
                "bench": 150,
                "decode": 150,
                "resume": 200,
                "ddp": 150,
                "pipeline": 120,
            },
            budget_seconds=560,
        )

    @classmethod
    def cpu_rehearsal(cls) -> Plan:
        threads = "trainer.num_threads=2"
        return cls(
            rehearsal=True,
            device="cpu",
            train_steps=4,
            resume_steps=6,
            # Small real batches; 4 test sentences decoded (eval_limit is in the run's config).
            train_sets=[
                "data.max_tokens=192",
                "data.eval_limit=4",
                "trainer.log_every_steps=2",
                threads,
            ],
            bench_batches=2,
            bench_reps=1,
            two_gpu_steps=4,
            two_gpu_sets=["trainer.num_threads=1", "data.max_tokens=256"],
            timeouts={
                "tests": 180,
                "train": 300,
                "bench": 300,
                "decode": 180,
                "resume": 240,
                "ddp": 240,
                "pipeline": 240,
            },
            budget_seconds=1500,
        )


@dataclasses.dataclass
class PartResult:
    """One row of the summary: status ok, skipped or FAILED, a short note and the numbers."""

    key: str
    title: str
    status: str = "ok"
    note: str = ""
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, why: str) -> PartResult:
        self.status, self.note = "skipped", why
        return self

    def fail(self, why: str) -> PartResult:
        self.status, self.note = "FAILED", why
        return self


@dataclasses.dataclass
class Completed:
    """A finished child process: exit status (None when killed at its time limit), output."""

    rc: int | None
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        """A one-line reason for a failure: the time limit, or the last error-like line."""
        if self.rc is None:
            return f"timed out after {self.seconds:.0f} s"
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        for line in reversed(lines):
            if re.search(r"error|Error|Exception|FAILED|failed", line):
                return f"exit {self.rc}: {line[:160]}"
        return f"exit {self.rc}: {lines[-1][:160] if lines else 'no output'}"


class Check:
    """Runs the parts one after another, logging every child's output to one file."""

    def __init__(self, plan: Plan, prepared: Path, out_dir: Path, work_dir: Path) -> None:
        self.plan = plan
        self.prepared = prepared
        self.out_dir = out_dir
        self.work = work_dir
        self.cache = work_dir / "cache"
        self.run_dir = work_dir / "run_base"
        self.log_path = out_dir / "gpu_check.log"
        self.started = time.monotonic()
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["TQDM_MININTERVAL"] = "10"  # progress bars: a line per 10 s in the log
        if plan.rehearsal:
            self.env.setdefault("OMP_NUM_THREADS", "2")
        self.info: dict[str, Any] = {}
        self.results: list[PartResult] = []
        self.flops_per_token: float | None = None
        self.last: Completed | None = None  # the latest child process of the running part

    # ---- helpers ---------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, flush=True)
        with self.log_path.open("a") as log:
            log.write(text + "\n")

    def seconds_left(self) -> float:
        return self.plan.budget_seconds - (time.monotonic() - self.started)

    def run(
        self, command: list[str], timeout: float, env: dict[str, str] | None = None
    ) -> Completed:
        """Runs ``command`` in the checkout, its output appended to the log; kills its whole
        process group (torchrun's workers too) at ``timeout``."""
        with self.log_path.open("a") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            offset = log.tell()
            start = time.monotonic()
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env or self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                rc: int | None = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                rc = None
            seconds = time.monotonic() - start
        with self.log_path.open() as log:
            log.seek(offset)
            output = log.read()
        with self.log_path.open("a") as log:
            log.write(f"[exit {rc}, {seconds:.1f} s]\n")
        self.last = Completed(rc, output, seconds)
        return self.last

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def seqlab(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "seqlab", *args]

    def sets(self, *values: str) -> list[str]:
        return [a for value in values for a in ("--set", value)]

    def train_base(self, device: str, max_steps: int, timeout: float) -> Completed:
        """``seqlab train`` of transformer_base in the check's run directory on ``device``."""
        sets = self.sets(*self.base_sets(device, max_steps))
        command = self.seqlab("train", "--experiment", BASE, "--logdir", str(self.run_dir), *sets)
        return self.run(command, timeout)

    def base_sets(self, device: str, max_steps: int) -> list[str]:
        """The overrides of part 2's run (and of part 5's resume, with another device)."""
        return [
            f"data.cache_dir={self.cache}",
            f"trainer.device={device}",
            "trainer.mixed_precision=bfloat16",
            f"trainer.max_steps={max_steps}",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            *self.plan.train_sets,
        ]

    def part(self, key: str, title: str, body: Callable[[PartResult, float], PartResult]) -> None:
        """Runs one part with its time limit (cut to the budget left); never raises."""
        result = PartResult(key, title)
        timeout = min(self.plan.timeouts.get(key, 120.0), self.seconds_left() - 5)
        self.say(f"\n===== {title} =====")
        start = time.monotonic()
        self.last = None
        if timeout < 20:
            result.skip(f"out of time (budget {self.plan.budget_seconds:.0f} s)")
        else:
            try:
                body(result, timeout)
            except Exception as e:  # noqa: BLE001 - a broken part is reported, the rest run
                result.fail(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
        result.seconds = time.monotonic() - start
        self.results.append(result)
        if result.status == "FAILED" and self.last is not None and not self.last.ok:
            # The end of the failing command's output (progress-bar redraws dropped).
            lines = [x.split("\r")[-1] for x in self.last.output.splitlines() if x.strip()]
            for tail in lines[-12:]:
                self.say(f"  | {tail[:200]}")
        line = f"[{result.status}] {title} ({result.seconds:.0f} s)"
        self.say(line + (f": {result.note}" if result.note else ""))

    def missing(self, *names: str) -> list[str]:
        return [n for n in names if not self.info["modules"].get(n, {}).get("ok")]

    # ---- part 0: environment ---------------------------------------------------------------------
    def environment(self, result: PartResult, timeout: float) -> PartResult:
        done = self.run(self.python(str(BENCH / "gpu_check.py"), "_environment"), timeout)
        match = re.search(r"^GPU_CHECK_ENV (.*)$", done.output, re.MULTILINE)
        if not done.ok or match is None:
            raise RuntimeError(f"the environment probe failed: {done.why()}")
        self.info = json.loads(match.group(1))
        modules = self.info["modules"]
        for name, (needed_by, _) in MODULES.items():
            entry = modules[name]
            state = entry["version"] if entry["ok"] else f"MISSING ({entry['error'][:80]})"
            self.say(f"  {name:<14} {state:<40} needed by {needed_by}")
        cuda = self.info["cuda"]
        torch_info = f"torch {self.info['torch']}, CUDA {cuda['version'] or 'none'}"
        if cuda["count"]:
            peak, peak_note = bf16_peak(cuda["name"])
            cuda["peak_bf16_tflops"] = peak
            self.say(
                f"  GPU: {cuda['name']} x{cuda['count']}, {cuda['memory_gib']:.0f} GiB, "
                f"capability {cuda['capability']}; bf16 dense peak {peak_note}"
            )
        else:
            self.say(f"  GPU: none visible ({torch_info})")
        result.numbers = {
            "python": self.info["python"],
            "torch": self.info["torch"],
            "cuda": cuda,
        }
        missing = [n for n in MODULES if not modules[n]["ok"]]
        gpu = f"{cuda['name']} x{cuda['count']}" if cuda["count"] else "no GPU"
        result.note = f"python {self.info['python']}, {torch_info}, {gpu}" + (
            f"; missing: {', '.join(missing)}" if missing else ""
        )
        if not self.plan.rehearsal and not cuda["count"]:
            result.fail(f"no CUDA device visible ({torch_info}); use --cpu-rehearsal")
        return result

    def needs(self, result: PartResult, modules: tuple[str, ...], cuda: bool = True) -> bool:
        """False (and the part marked skipped or failed) when it cannot run here."""
        if not self.info:
            result.fail("the environment probe failed")
            return False
        if cuda and not self.plan.rehearsal and not self.info["cuda"]["count"]:
            result.fail("no CUDA device visible")
            return False
        missing = self.missing(*modules)
        if missing:
            result.skip(f"{', '.join(missing)} not installed")
            return False
        return True

    # ---- part 1: the CUDA tests ------------------------------------------------------------------
    def tests(self, result: PartResult, timeout: float) -> PartResult:
        if not self.needs(result, (*SEQLAB_MODULES, "pytest")):
            return result
        files = sorted(
            str(p.relative_to(REPO))
            for p in (REPO / "tests").rglob("test_*.py")
            if "mark.cuda" in p.read_text(errors="replace")
        )
        if not files:
            return result.fail("no test file under tests/ carries pytest.mark.cuda")
        conftests = [REPO / "tests" / "conftest.py", REPO / "tests" / "train" / "conftest.py"]
        honoured = any(TEST_CACHE_VARIABLE in p.read_text() for p in conftests if p.exists())
        if not honoured:
            why = (
                f"no conftest reads {TEST_CACHE_VARIABLE}: the bible_cache_dir fixture is a "
                "fresh temp dir, where the corpus needs the Debian sword packages"
            )
            if not Path("/usr/share/sword/mods.d").is_dir():
                return result.fail(why + " (not installed here)")
            self.say(f"  warning: {why}")
        self.say(f"  test files with the cuda mark: {' '.join(files)}")
        env = dict(self.env, **{TEST_CACHE_VARIABLE: str(self.cache)})
        command = self.python("-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *files)
        done = self.run(command, timeout, env)
        counts = pytest_counts(done.output)
        result.numbers = {"files": files, **counts, "conftest_reads_cache_variable": honoured}
        summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no summary line"
        if done.rc is None:
            return result.fail(f"timed out after {done.seconds:.0f} s ({summary})")
        if not done.ok:
            return result.fail(f"pytest exit {done.rc}: {summary}")
        if not counts.get("passed"):
            if self.plan.rehearsal:
                return result.skip(f"no CUDA here: {summary}")
            return result.fail(f"nothing passed on the GPU: {summary}")
        result.note = f"{summary} in {done.seconds:.0f} s"
        return result

    # ---- part 2: training on the GPU -------------------------------------------------------------
    def train(self, result: PartResult, timeout: float) -> PartResult:
        if not self.needs(result, SEQLAB_MODULES):
            return result
        steps = self.plan.train_steps
        done = self.train_base(self.plan.device, steps, timeout)
        if not done.ok:
            return result.fail(done.why())
        if f"training done at step {steps}" not in done.output:
            return result.fail(f"no 'training done at step {steps}' in its output")
        stats = train_scalars(self.run_dir / "train")
        stats["wall_seconds"] = done.seconds
        result.numbers = stats
        if stats.get("tokens_per_second"):
            result.note = (
                f"{stats['tokens_per_second']:,.0f} tok/s (median of {stats['windows']} log "
                f"windows after the first), final loss {stats.get('loss', float('nan')):.2f}"
            )
        else:
            result.note = f"no tokens_per_second scalars read ({stats.get('error', '?')})"
        return result

    def add_mfu(self) -> None:
        """Part 2's MFU, once part 3 counted the FLOPs per token."""
        train = next((r for r in self.results if r.key == "train"), None)
        if train is None or train.status != "ok":
            return
        tps = train.numbers.get("tokens_per_second")
        peak = self.info.get("cuda", {}).get("peak_bf16_tflops")
        if not tps or not self.flops_per_token:
            train.note += "; MFU n/a (no FLOP count from part 3)"
            return
        achieved = tps * self.flops_per_token / 1e12
        train.numbers["model_tflops_per_second"] = achieved
        if self.plan.rehearsal or not peak:
            train.note += f"; {achieved:.2f} model TFLOP/s, MFU n/a (no bf16 peak known)"
            return
        train.numbers["mfu"] = achieved / peak
        train.note += f"; MFU {achieved / peak:.1%} of {peak:.0f} TFLOP/s"

    # ---- part 3: seqlab against Marian -----------------------------------------------------------
    def bench(self, result: PartResult, timeout: float) -> PartResult:
        if not self.needs(result, SEQLAB_MODULES):
            return result
        output = self.work / "bench.json"
        sets = [f"data.cache_dir={self.cache}", *self.plan.train_sets]
        command = self.python(
            str(BENCH / "gpu_check.py"),
            "_bench",
            "--experiment",
            BASE,
            *self.sets(*sets),
            "--device",
            self.plan.device,
            "--precision",
            "bfloat16",
            "--batches",
            str(self.plan.bench_batches),
            "--reps",
            str(self.plan.bench_reps),
            "--output",
            str(output),
        )
        if self.missing("transformers"):
            command.append("--no-marian")
        done = self.run(command, timeout)
        if not done.ok or not output.exists():
            return result.fail(done.why())
        numbers = json.loads(output.read_text())
        result.numbers = numbers
        self.flops_per_token = numbers["flops_per_token"]
        seqlab = numbers["seqlab"]
        batches = numbers["batches"]
        shape = (
            f"{len(batches)} real batches of data.max_tokens={numbers['max_tokens']}, "
            f"{sum(b['sentences'] for b in batches) // len(batches)} sentences on average"
        )
        flops = f"{self.flops_per_token / 1e9:.2f} GFLOP/token (FlopCounterMode)"
        if "hf" not in numbers:
            why = numbers.get("hf_error") or "transformers not installed"
            result.note = f"seqlab {seqlab['tokens_per_second']:,.0f} tok/s; {flops}; {shape}"
            return result.skip(f"Marian: {why}; " + result.note)
        result.note = (
            f"seqlab {seqlab['tokens_per_second']:,.0f} tok/s, Marian "
            f"{numbers['hf']['tokens_per_second']:,.0f} tok/s: seqlab/Marian "
            f"{numbers['ratio_seqlab_over_hf']:.2f}; {flops}; {shape}"
        )
        return result

    # ---- part 4: decoding on the GPU -------------------------------------------------------------
    def decode(self, result: PartResult, timeout: float) -> PartResult:
        if not self.needs(result, SEQLAB_MODULES):
            return result
        if not any((self.run_dir / "checkpoints").glob("ckpt-*.pt")):
            return result.skip("no checkpoint from part 2")
        command = self.seqlab(
            "decode",
            "--logdir",
            str(self.run_dir),
            "--dataset",
            "test",
            "--device",
            self.plan.device,
        )
        done = self.run(command, timeout)
        if not done.ok:
            return result.fail(done.why())
        scores = sorted((self.run_dir / "decode_test").glob("score-*.json"))
        if not scores:
            return result.fail("no decode_test/score-*.json written")
        score = json.loads(scores[-1].read_text())
        hyps = scores[-1].with_name(
            scores[-1].name.replace("score-", "hyps-").replace(".json", ".txt")
        )
        sentences = len(hyps.read_text().splitlines()) if hyps.exists() else 0
        result.numbers = {"sentences": sentences, "wall_seconds": done.seconds, **score}
        result.note = (
            f"{sentences} sentences, {score['sentences_per_second']:.1f} sent/s, "
            f"BLEU {score['bleu']:.2f} (a {self.plan.train_steps}-step model)"
        )
        return result

    # ---- part 5: the GPU checkpoint resumed on the CPU -------------------------------------------
    def resume(self, result: PartResult, timeout: float) -> PartResult:
        if not self.needs(result, SEQLAB_MODULES, cuda=False):
            return result
        if not any((self.run_dir / "checkpoints").glob("ckpt-*.pt")):
            return result.skip("no checkpoint from part 2")
        steps = self.plan.resume_steps
        done = self.train_base("cpu", steps, timeout)
        if not done.ok:
            return result.fail(done.why())
        resumed = re.search(r"resumed from (\S+) at step (\d+)", done.output)
        if resumed is None:
            return result.fail("no 'resumed from' in its output")
        if f"training done at step {steps}" not in done.output:
            return result.fail(f"no 'training done at step {steps}' in its output")
        checkpoint = Path(resumed.group(1)).name
        result.numbers = {"resumed_from": checkpoint, "final_step": steps, "seconds": done.seconds}
        result.note = f"resumed from {checkpoint} on the CPU, trained to step {steps}"
        return result

    # ---- parts 6 and 7: DDP and pipeline stages on two GPUs ------------------------------------
    def ddp(self, result: PartResult, timeout: float) -> PartResult:
        return self.two_processes(result, timeout, "ddp", "2 processes")

    def pipeline(self, result: PartResult, timeout: float) -> PartResult:
        return self.two_processes(result, timeout, "pipeline", "2 pipeline stages")

    def two_processes(
        self, result: PartResult, timeout: float, strategy: str, layout: str
    ) -> PartResult:
        """A short run of transformer_tiny under ``trainer.distributed.strategy`` in 2
        processes (2 GPUs, NCCL; gloo on the CPU when rehearsing): its loss and tokens/s."""
        if not self.needs(result, SEQLAB_MODULES):
            return result
        count = self.info["cuda"]["count"]
        if not self.plan.rehearsal and count < 2:
            return result.skip(f"{count} GPU visible; needs 2")
        device = "cpu" if self.plan.rehearsal else "cuda"
        steps = self.plan.two_gpu_steps
        sets = [
            f"data.cache_dir={self.cache}",
            f"trainer.device={device}",
            f"trainer.max_steps={steps}",
            f"trainer.distributed.strategy={strategy}",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
            "trainer.checkpoint_every_steps=0",
            *self.plan.two_gpu_sets,
        ]
        logdir = self.work / f"run_{strategy}"
        command = self.seqlab(
            "train",
            "--nproc",
            "2",
            "--experiment",
            TINY,
            "--logdir",
            str(logdir),
            *self.sets(*sets),
        )
        done = self.run(command, timeout)
        if not done.ok:
            return result.fail(done.why())
        if f"training done at step {steps}" not in done.output:
            return result.fail(f"no 'training done at step {steps}' in its output")
        stats = train_scalars(logdir / "train")
        result.numbers = {"seconds": done.seconds, **stats}
        where = "CPU, gloo (rehearsal)" if self.plan.rehearsal else "2 GPUs, nccl"
        result.note = (
            f"{steps} steps of transformer_tiny in {layout} on {where}: final loss "
            f"{stats.get('loss', float('nan')):.2f}, "
            f"{stats.get('tokens_per_second', float('nan')):,.0f} tok/s"
        )
        return result

    # ---- all of it -------------------------------------------------------------------------------
    def main(self) -> int:
        self.log_path.write_text("")
        mode = "CPU rehearsal" if self.plan.rehearsal else "GPU check"
        self.say(f"seqlab {mode} (issue 15): prepared data {self.prepared}, work dir {self.work}")
        self.part("env", "0 environment", self.environment)
        problem = check_prepared(self.prepared)
        if problem:
            self.say(f"prepared data: {problem}")
            self.results.append(PartResult("data", "  prepared data").fail(problem))
            for key, title in PART_TITLES:
                self.results.append(PartResult(key, title).fail("no prepared data (above)"))
            return self.finish()
        shutil.copytree(self.prepared, self.cache)
        before = {p.name for p in (self.cache / "tokenizers").glob("*.model")}
        bodies = {
            "tests": self.tests,
            "train": self.train,
            "bench": self.bench,
            "decode": self.decode,
            "resume": self.resume,
            "ddp": self.ddp,
            "pipeline": self.pipeline,
        }
        for key, title in PART_TITLES:
            self.part(key, title, bodies[key])
        self.add_mfu()
        trained = sorted({p.name for p in (self.cache / "tokenizers").glob("*.model")} - before)
        if trained:
            self.say(f"note: tokenizers trained here (not in the prepared dir): {trained}")
        return self.finish()

    def finish(self) -> int:
        total = time.monotonic() - self.started
        failed = [r for r in self.results if r.status == "FAILED"]
        skipped = [r for r in self.results if r.status == "skipped"]
        mode = "CPU rehearsal" if self.plan.rehearsal else "GPU check"
        cuda = self.info.get("cuda", {})
        device = cuda.get("name") or "no GPU"
        header = (
            f"seqlab {mode}: {device}, torch {self.info.get('torch', '?')}, "
            f"{total / 60:.0f} min {total % 60:.0f} s"
        )
        lines = [header, *summary_table(self.results)]
        numbers = ", ".join(r.title.split()[0] for r in failed)
        verdict = f"{len(failed)} FAILED (parts {numbers})" if failed else "no part failed"
        lines.append(f"result: {verdict} ({len(skipped)} skipped); log {self.log_path}")
        text = "\n".join(lines) + "\n"
        self.say("\n" + "=" * 100)
        self.say(text.rstrip())
        (self.out_dir / "gpu_check_summary.txt").write_text(text)
        record = {
            "mode": mode,
            "prepared": str(self.prepared),
            "work_dir": str(self.work),
            "seconds": total,
            "environment": self.info,
            "parts": [dataclasses.asdict(r) for r in self.results],
        }
        (self.out_dir / "gpu_check.json").write_text(json.dumps(record, indent=1, default=str))
        return 1 if failed else 0


PART_TITLES: tuple[tuple[str, str], ...] = (
    ("tests", "1 CUDA tests (pytest -m cuda)"),
    ("train", "2 train transformer_base bf16"),
    ("bench", "3 seqlab vs Marian train step"),
    ("decode", "4 decode test, beam 4"),
    ("resume", "5 resume GPU checkpoint on CPU"),
    ("ddp", "6 DDP, 2 processes"),
    ("pipeline", "7 pipeline, 2 stages"),
)


# ---- pieces used by the parts --------------------------------------------------------------------
def bf16_peak(device_name: str) -> tuple[float | None, str]:
    """(TFLOP/s, description) of the bf16 dense peak of a GPU named ``device_name``."""
    for pattern, peak in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            if peak is None:
                break
            return peak, f"{peak:.0f} TFLOP/s (datasheet, matched {pattern!r})"
    return None, "n/a (not in this script's table)"


def check_prepared(prepared: Path) -> str:
    """'' if ``prepared`` holds the prepared corpus, else what is missing."""
    corpus = prepared / "corpora" / CORPUS
    missing = [
        name
        for name in ("train.tsv", "dev.tsv", "test.tsv", "meta.json")
        if not (corpus / name).exists()
    ]
    if missing:
        return (
            f"{corpus} lacks {', '.join(missing)}; make it where the Debian sword packages are: "
            f"bash scripts/gpu_check.sh --prepare {prepared}"
        )
    return ""


def pytest_counts(output: str) -> dict[str, int]:
    """Counts of pytest's closing line ('3 passed, 1 skipped in 2.0s')."""
    counts: dict[str, int] = {}
    for line in reversed(output.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed)", line)
        if found and re.search(r" in [\d.]+s", line):
            for number, word in found:
                counts[word] = int(number)
            break
    return counts


def train_scalars(event_dir: Path) -> dict[str, Any]:
    """Steady-state tokens/s of a run: the median over its log windows after the first
    (which holds start-up and warm-up), and the last loss and train_seconds."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as e:
        return {"error": f"tensorboard: {e}"}
    events = EventAccumulator(str(event_dir))
    events.Reload()
    tags = set(events.Tags().get("scalars", []))
    if "tokens_per_second" not in tags:
        return {"error": f"no tokens_per_second in {event_dir}"}
    windows = [e.value for e in events.Scalars("tokens_per_second")]
    steady = windows[1:] or windows
    out: dict[str, Any] = {
        "tokens_per_second": sorted(steady)[len(steady) // 2],
        "windows": len(steady),
        "tokens_per_second_windows": windows,
    }
    for tag in ("loss", "train_seconds", "steps_per_second", "data_wait_fraction"):
        if tag in tags:
            out[tag] = events.Scalars(tag)[-1].value
    return out


def summary_table(results: list[PartResult], width: int = 100) -> list[str]:
    """The parts as rows of: title, status, note (wrapped under the note column)."""
    title_w = max(len(r.title) for r in results)
    lines = [f"{'part':<{title_w}}  {'status':<7}  {'s':>4}  numbers / why", "-" * width]
    indent = title_w + 2 + 7 + 2 + 4 + 2
    for r in results:
        words, rows, row = r.note.split(), [], ""
        for word in words:
            if row and len(row) + 1 + len(word) > width - indent:
                rows.append(row)
                row = word
            else:
                row = f"{row} {word}".strip()
        rows.append(row)
        lines.append(f"{r.title:<{title_w}}  {r.status:<7}  {r.seconds:>4.0f}  {rows[0]}")
        lines += [" " * indent + extra for extra in rows[1:]]
    return lines


# ---- child processes: the environment probe and part 3 -------------------------------------------
def environment_probe() -> int:
    """Prints one line 'GPU_CHECK_ENV {json}': every module's version or import error, and
    what CUDA torch sees (in a child process, so the check itself holds no CUDA context)."""
    import platform

    modules: dict[str, dict[str, Any]] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
            version = getattr(module, "__version__", None)
            if version is None:
                top = importlib.import_module(name.split(".")[0])
                version = getattr(top, "__version__", "?")
            modules[name] = {"ok": True, "version": str(version)}
        except Exception as e:  # noqa: BLE001 - any import failure means 'missing'
            modules[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    info: dict[str, Any] = {"python": platform.python_version(), "modules": modules}
    cuda: dict[str, Any] = {"count": 0, "version": None, "name": None}
    try:
        import torch

        info["torch"] = torch.__version__
        cuda["version"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            cuda.update(
                count=torch.cuda.device_count(),
                name=torch.cuda.get_device_name(0),
                memory_gib=props.total_memory / 2**30,
                capability=f"{props.major}.{props.minor}",
            )
    except Exception as e:  # noqa: BLE001
        info["torch"] = f"unusable ({type(e).__name__}: {e})"
    info["cuda"] = cuda
    print("GPU_CHECK_ENV " + json.dumps(info), flush=True)
    return 0


def bench_step(argv: list[str]) -> int:
    """Part 3: seqlab's and Marian's training step on the same real batches, and the FLOPs."""
    p = argparse.ArgumentParser(prog="gpu_check.py _bench")
    p.add_argument("--experiment", default=BASE)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bfloat16")
    p.add_argument("--batches", type=int, default=4, help="real training batches, cycled")
    p.add_argument("--reps", type=int, default=3, help="timed passes over the batches")
    p.add_argument("--no-marian", action="store_true")
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)

    import torch

    sys.path.insert(0, str(BENCH))
    from bench_transformer_vs_marian import (
        build_marian,
        build_seqlab,
        hf_inputs,
        hf_train_step,
        num_params,
        seqlab_train_step,
        time_pair,
        trainable,
    )
    from bench_transformer_vs_marian import parse_args as bench_parse_args

    from seqlab.train.mixed_precision import autocast
    from seqlab.train.trainer import batch_tokens

    device = torch.device(args.device)
    sets = [a for value in args.set for a in ("--set", value)]
    bench_args = bench_parse_args(["--experiment", args.experiment, *sets])
    experiment, task = build_seqlab(bench_args)
    if experiment.trainer.num_threads > 0:
        torch.set_num_threads(experiment.trainer.num_threads)
    data = experiment.data.build()
    data.load_tokenizer()
    examples = data.examples("train")
    stream = data.train_stream(examples, experiment.seed)
    cpu_batches = [data.collate(examples, next(stream)) for _ in range(args.batches)]
    batches = [b.to(device) for b in cpu_batches]
    tokens = [batch_tokens(b) for b in cpu_batches]
    described = [
        {
            "sentences": int(b.src_ids.shape[0]),
            "source_shape": list(b.src_ids.shape),
            "target_shape": list(b.tgt_in_ids.shape),
            "tokens": t,
        }
        for b, t in zip(cpu_batches, tokens, strict=True)
    ]
    for d in described:
        print(f"batch: {d['sentences']} sentences, source {d['source_shape']}, target "
              f"{d['target_shape']}, {d['tokens']:.0f} real tokens")  # fmt: skip
    task.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward_backward(batch: Any) -> None:
        with autocast(args.precision, device):
            predictions = task.compute_predictions(batch)
            loss, _ = task.compute_loss(batch, predictions)
        loss.backward()
        task.zero_grad(set_to_none=True)

    flops, by_op, attention_added = count_model_flops(forward_backward, batches, experiment.task)
    flops_per_token = sum(flops) / sum(tokens)
    method = (
        "torch.utils.flop_counter.FlopCounterMode over one forward+backward of each batch "
        "(padded positions included; optimizer and elementwise ops not counted)"
    )
    if attention_added:
        method += (
            "; attention products added analytically (12 * batch * query length * key length "
            "* width per attention layer: this SDPA kernel is not counted by FlopCounterMode)"
        )
    print(f"seqlab forward+backward: {flops_per_token / 1e9:.3f} GFLOP per real token; {method}")
    print("counted by op: " + ", ".join(f"{op} {n / 1e9:.1f} GFLOP" for op, n in by_op.items()))

    results: dict[str, Any] = {
        "device": str(device),
        "experiment": args.experiment,
        "sets": args.set,
        "precision": args.precision,
        "max_tokens": experiment.data.max_tokens,
        "batches": described,
        "flops_per_step": flops,
        "flops_per_token": flops_per_token,
        "flops_by_op": by_op,
        "flops_method": method,
        "seqlab_params": num_params(task),
    }
    steps: dict[str, Callable[[], Any]] = {}
    seqlab_opt = experiment.trainer.optimizer.build(trainable(task), lr=1e-4)
    steps["seqlab"] = cycle(
        [
            lambda b=b: seqlab_train_step(experiment, task, seqlab_opt, b, args.precision, device)
            for b in batches
        ],
        sync,
    )
    if not args.no_marian:
        try:
            model, notes = build_marian(bench_args, experiment.task)
            model.to(device)
            hf_batches = [hf_inputs(b) for b in batches]
            hf_opt = experiment.trainer.optimizer.build(trainable(model), lr=1e-4)
            steps["hf"] = cycle(
                [
                    lambda b=b: hf_train_step(experiment, model, hf_opt, b, args.precision, device)
                    for b in hf_batches
                ],
                sync,
            )
            results["hf_params"] = num_params(model)
            results["differences"] = notes
        except Exception as e:  # noqa: BLE001 - reported; seqlab's side still runs
            results["hf_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    # Warm-up: one pass over the batches each (the same batches in the same order later).
    for side in list(steps):
        try:
            for _ in batches:
                steps[side]()
        except Exception as e:  # noqa: BLE001
            if side == "seqlab":
                raise
            results["hf_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            del steps[side]
    timed = time_pair(steps, warmup=0, reps=args.reps * len(batches))
    for side, stats in timed.items():
        seconds = sum(stats["times_s"])
        results[side] = {
            "tokens_per_second": sum(tokens) * args.reps / seconds,
            "step_ms_median": stats["median_s"] * 1e3,
            "step_ms": [t * 1e3 for t in stats["times_s"]],
        }
        print(f"{side}: {results[side]['tokens_per_second']:,.0f} tok/s, median step "
              f"{results[side]['step_ms_median']:.1f} ms")  # fmt: skip
    if "hf" in results:
        ratio = results["seqlab"]["tokens_per_second"] / results["hf"]["tokens_per_second"]
        results["ratio_seqlab_over_hf"] = ratio
        print(f"seqlab/Marian tokens/s: {ratio:.2f}")
    if device.type == "cuda":
        results["measured_bf16_matmul_tflops"] = bf16_matmul_tflops(torch)
        print(
            f"measured bf16 matmul (8192^3): {results['measured_bf16_matmul_tflops']:.0f} TFLOP/s"
        )
    Path(args.output).write_text(json.dumps(results, indent=1))
    return 0


def count_model_flops(
    forward_backward: Callable[[Any], None], batches: list[Any], task_config: Any
) -> tuple[list[int], dict[str, int], bool]:
    """FLOPs of one forward+backward of each batch, counted by FlopCounterMode: (per batch,
    summed per op, whether the attention products were added analytically).

    FlopCounterMode counts CUDA's SDPA kernels (flash, memory-efficient, cuDNN) and explicit
    ``bmm`` attention, but not the CPU flash kernel: where no attention op was counted, the
    two attention products are added for every attention layer, forward and backward
    (3 x 2 products of 2 * batch * query length * key length * width FLOPs each).
    """
    from torch.utils.flop_counter import FlopCounterMode

    per_batch: list[int] = []
    by_op: dict[str, int] = {}
    for batch in batches:
        counter = FlopCounterMode(display=False)
        with counter:
            forward_backward(batch)
        per_batch.append(int(counter.get_total_flops()))
        for op, n in counter.get_flop_counts().get("Global", {}).items():
            by_op[str(op)] = by_op.get(str(op), 0) + int(n)
    attention_counted = any("scaled_dot_product" in op or "bmm" in op for op in by_op)
    if attention_counted:
        return per_batch, by_op, False
    enc, dec = task_config.encoder, task_config.decoder
    for i, batch in enumerate(batches):
        b, s = batch.src_ids.shape
        t = batch.tgt_in_ids.shape[1]
        products = enc.num_layers * s * s * enc.layer.model_dim
        products += dec.num_layers * (t * t + t * s) * dec.layer.model_dim
        extra = 12 * int(b) * int(products)
        per_batch[i] += extra
        by_op["attention (analytic)"] = by_op.get("attention (analytic)", 0) + extra
    return per_batch, by_op, True


def cycle(fns: list[Callable[[], Any]], sync: Callable[[], Any]) -> Callable[[], None]:
    """A function calling ``fns`` in turn, one per call, waiting for the device each time."""
    state = {"next": 0}

    def call() -> None:
        fns[state["next"] % len(fns)]()
        state["next"] += 1
        sync()

    return call


def bf16_matmul_tflops(torch: Any, size: int = 8192, reps: int = 10) -> float:
    """The best bf16 TFLOP/s of ``[size, size] @ [size, size]`` on the current GPU."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


# ---- preparation (where the Debian packages are) -------------------------------------------------
# The SentencePiece models seqlab trains (cached by content in DIR/tokenizers): part 2's
# transformer_base, transformer_tiny (part 6), and the CUDA tests' tiny trainer
# (tests/train/conftest.py: transformer_tiny on 200 training pairs).
TOKENIZERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (BASE, ()),
    (TINY, ()),
    (TINY, ("data.train_limit=200",)),
)


def prepare(directory: Path) -> int:
    """Prepares the corpus and trains the tokenizers the check needs, into ``directory``."""
    from seqlab.core.registry import get_experiment
    from seqlab.data.corpora.catalog import corpus_files

    for split, path in corpus_files(CORPUS, directory, prepare=True).items():
        print(f"{CORPUS} {split}: {path}")
    for name, sets in TOKENIZERS:
        config = get_experiment(name)
        config.apply_overrides([f"data.cache_dir={directory}", *sets])
        data = config.data.build()
        data.load_tokenizer()
        print(f"tokenizer of {name} {' '.join(sets)}: {data.tokenizer_path}")
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    print(f"{directory}: {size / 2**20:.1f} MiB")
    return 0


# ---- command line --------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/gpu_check.sh",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("prepared", type=Path, help="the prepared data dir (see --prepare)")
    p.add_argument(
        "--prepare",
        action="store_true",
        help="make PREPARED (corpus and tokenizers; needs the Debian sword packages) and exit",
    )
    p.add_argument(
        "--cpu-rehearsal",
        action="store_true",
        help="every part on the CPU with tiny sizes (CUDA-only parts skip)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or "gpu_check_out"),
        help="where the summary, JSON and log go (default: $OUT if set, else ./gpu_check_out)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="runs and the cache copy (checkpoints: ~0.7 GB each), kept; default a new temp "
        "dir, removed at the end",
    )
    p.add_argument("--keep-work-dir", action="store_true", help="keep the default temp work dir")
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="stop starting parts after this long (default 560 on a GPU, 1500 rehearsing)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_environment"]:
        return environment_probe()
    if argv[:1] == ["_bench"]:
        return bench_step(argv[1:])
    args = parse_args(argv)
    prepared = args.prepared.resolve()
    if args.prepare:
        return prepare(prepared)
    plan = Plan.cpu_rehearsal() if args.cpu_rehearsal else Plan.gpu()
    if args.budget_seconds:
        plan.budget_seconds = args.budget_seconds
    if args.work_dir is not None:
        work = args.work_dir.resolve()
        if work.exists() and any(work.iterdir()):
            print(f"--work-dir {work} is not empty (a run there would resume)", file=sys.stderr)
            return 2
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return Check(plan, prepared, out, work).main()
    finally:
        if args.work_dir is None and not args.keep_work_dir:
            shutil.rmtree(work, ignore_errors=True)  # checkpoints of ~0.7 GB each


if __name__ == "__main__":
    raise SystemExit(main())
