"""Black-box crash safety: a training subprocess killed with SIGKILL at random moments (and
once while a checkpoint is being written), or stopped with SIGTERM, and restarted with the same
command, ends bitwise identical to an uninterrupted run and loses no checkpoint."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import list_checkpoints, load_checkpoint

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

MAX_STEPS = 60
EVERY = 10
NUM_RANDOM_KILLS = 4
KILL_SEED = 1234
# The plain progress line training prints when its output goes to a file.
PROGRESS = re.compile(rf"\[seqlab\] step (\d+)/{MAX_STEPS} ")


def train_command(logdir: Path, cache_dir: Path, max_steps: int = MAX_STEPS) -> list[str]:
    overrides = [
        f"data.cache_dir={cache_dir}",
        "data.train_limit=300",
        "data.eval_limit=10",
        f"trainer.max_steps={max_steps}",
        f"trainer.checkpoint_every_steps={EVERY}",
        "trainer.keep_checkpoints=0",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
        "trainer.log_every_steps=1",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    return [
        sys.executable,
        "-m",
        "seqlab.cli",
        "train",
        "--experiment",
        "mt.bible_en_es.transformer_tiny",
        "--logdir",
        str(logdir),
        *sets,
    ]


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Starts ``command`` with stdout and stderr going to ``log`` (a pipe could fill up)."""
    with open(log, "ab") as f:
        return subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT)


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def temp_checkpoints(directory: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(directory) if e.name.startswith(".ckpt-")]
    except FileNotFoundError:
        return []


def kill_at(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILLs ``proc`` after ``delay`` seconds; False if it finished first."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def kill_at_step(proc: subprocess.Popen[bytes], log: Path, step: int, delay: float) -> bool:
    """SIGKILLs ``proc`` ``delay`` seconds after its progress lines reach ``step``."""
    while proc.poll() is None:
        shown = PROGRESS.findall(log.read_text(errors="replace"))
        if shown and int(shown[-1]) >= step:
            return kill_at(proc, delay)
        time.sleep(0.01)
    return False


def kill_while_saving(proc: subprocess.Popen[bytes], directory: Path) -> bool:
    """SIGKILLs ``proc`` as soon as a temporary checkpoint file appears; False if none did."""
    while proc.poll() is None:
        if temp_checkpoints(directory):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    return False


def final_weights(logdir: Path) -> dict[str, torch.Tensor]:
    step, path = list_checkpoints(logdir / "checkpoints")[-1]
    assert step == MAX_STEPS
    return load_checkpoint(path)["model"]


@pytest.fixture
def cache_dir(bible_cache_dir: Path) -> Path:
    return bible_cache_dir


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_bitwise_identical(
    cache_dir: Path, tmp_path: Path
) -> None:
    # Prepares the data cache, so that both runs below start equally fast.
    log = tmp_path / "output.txt"
    straight = start(train_command(tmp_path / "straight", cache_dir), log)
    assert straight.wait(timeout=300) == 0, tail(log)

    logdir = tmp_path / "killed"
    command = train_command(logdir, cache_dir)
    rng = random.Random(KILL_SEED)
    kills = kills_while_saving = 0
    # One kill at a random moment of start-up (data, tokenizer, model), then kills at random
    # steps (and a random fraction of a step) after the last checkpoint.
    proc = start(command, tmp_path / "run-0.txt")
    kills += kill_at(proc, rng.uniform(0.5, 2.0))
    for run in range(1, NUM_RANDOM_KILLS):
        done = list_checkpoints(logdir / "checkpoints")
        step = rng.randint(done[-1][0] + 1 if done else 1, MAX_STEPS - EVERY // 2)
        proc = start(command, tmp_path / f"run-{run}.txt")
        if kill_at_step(proc, tmp_path / f"run-{run}.txt", step, rng.uniform(0.0, 0.1)):
            kills += 1
        else:
            assert proc.returncode == 0, tail(tmp_path / f"run-{run}.txt")
    for _ in range(3):
        if kills_while_saving or (
            list_checkpoints(logdir / "checkpoints")
            and list_checkpoints(logdir / "checkpoints")[-1][0] == MAX_STEPS
        ):
            break
        proc = start(command, log)
        if kill_while_saving(proc, logdir / "checkpoints"):
            kills += 1
            # The temporary file outlives the process only if the kill landed mid-write.
            kills_while_saving += bool(temp_checkpoints(logdir / "checkpoints"))
        else:
            assert proc.returncode == 0, tail(log)
    runs = 0
    while not list_checkpoints(logdir / "checkpoints") or (
        list_checkpoints(logdir / "checkpoints")[-1][0] < MAX_STEPS
    ):
        proc = subprocess.run(command, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        runs += 1
        assert runs <= 2

    assert kills >= NUM_RANDOM_KILLS
    assert kills_while_saving >= 1, "no kill landed while a checkpoint was being written"
    # No checkpoint lost (keep_checkpoints=0 keeps all) and every one loads.
    steps = [s for s, _ in list_checkpoints(logdir / "checkpoints")]
    assert set(range(EVERY, MAX_STEPS + 1, EVERY)) <= set(steps), steps
    for _, path in list_checkpoints(logdir / "checkpoints"):
        load_checkpoint(path)
    a, b = final_weights(tmp_path / "straight"), final_weights(logdir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    print(f"kills survived: {kills} (while saving: {kills_while_saving})")


@pytest.mark.slow
def test_sigterm_saves_current_step_and_exits_zero(cache_dir: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    # A large checkpoint interval: the only mid-run checkpoint is the one SIGTERM causes.
    command = train_command(logdir, cache_dir, max_steps=100000)
    command += ["--set", "trainer.checkpoint_every_steps=0"]
    log = tmp_path / "output.txt"
    proc = start(command, log)
    # Waits until training runs (a progress line reports a step), then stops it.
    deadline = time.time() + 120
    while "[seqlab] step " not in log.read_text(errors="replace"):
        assert proc.poll() is None and time.time() < deadline, tail(log)
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, tail(log)
    assert time.time() - sent < 10
    assert "signal 15: saving a checkpoint" in log.read_text(errors="replace")
    checkpoints = list_checkpoints(logdir / "checkpoints")
    assert len(checkpoints) == 1
    step, path = checkpoints[0]
    assert 0 < step < 100000
    assert load_checkpoint(path)["step"] == step

    resumed = subprocess.run(
        command[:-2] + ["--set", "trainer.max_steps=" + str(step + 3)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {path} at step {step}" in resumed.stderr + resumed.stdout
    assert list_checkpoints(logdir / "checkpoints")[-1][0] == step + 3
