"""``--checkpoint PATH|STEP`` on eval, decode, infer and export, and ``--follow``: every
checkpoint once in step order, waiting for the run to start, exiting once training finished."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.export.predictor import Predictor
from seqlab.train.checkpoint import checkpoint_path, list_checkpoints
from seqlab.train.checkpoint_follower import CheckpointFollower
from seqlab.train.device import CPU
from seqlab.train.run_status import FINISHED_FILE, mark_finished, read_finished
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_eval_decode_infer_and_export_take_a_step_or_a_path(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = str(tiny_run_dir)
    assert main(["eval", "--logdir", logdir, "--checkpoint", "2"]) == 0
    assert "step 2 dev" in capsys.readouterr().out
    assert (
        json.loads((tiny_run_dir / "eval_dev" / "metrics-00000002.json").read_text())["step"] == 2
    )
    ckpt4 = checkpoint_path(tiny_run_dir / "checkpoints", 4)
    assert main(["decode", "--logdir", logdir, "--checkpoint", str(ckpt4)]) == 0
    assert "decode dev at step 4" in capsys.readouterr().out
    # Without --checkpoint: the newest.
    assert main(["decode", "--logdir", logdir]) == 0
    assert "decode dev at step 6" in capsys.readouterr().out

    predictor = Predictor.from_logdir(tiny_run_dir, checkpoint=2)
    assert predictor.checkpoint_path == checkpoint_path(tiny_run_dir / "checkpoints", 2)
    text = tmp_path / "in.txt"
    text.write_text("In the beginning God created the heaven and the earth.\n")
    assert main(["infer", "--logdir", logdir, "--checkpoint", "2", "--input", str(text)]) == 0
    assert capsys.readouterr().out.strip() == predictor.predict([text.read_text().strip()])[0]

    out = tmp_path / "artifact"
    args = ["export", "--logdir", logdir, "--format", "torch", "--out", str(out)]
    assert main([*args, "--checkpoint", "4"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["checkpoint"] == str(ckpt4)


@pytest.mark.parametrize("command", ["eval", "decode", "infer", "export"])
def test_an_unknown_step_or_file_is_one_line_listing_the_steps(
    tiny_run_dir: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command, "--logdir", str(tiny_run_dir)]
    if command == "export":
        args += ["--format", "torch", "--out", str(tmp_path / "artifact")]
    if command == "infer":
        args += ["--prompt", "x"]
    assert main([*args, "--checkpoint", "3"]) == 1
    err = one_line_error(capsys)
    assert "--checkpoint 3: no checkpoint of step 3" in err and "steps 2, 4, 6" in err
    assert main([*args, "--checkpoint", str(tmp_path / "nothing.pt")]) == 1
    assert "nothing.pt: no such checkpoint file" in one_line_error(capsys)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main([*args, "--checkpoint", str(junk)]) == 1
    assert f"{junk} is not a seqlab checkpoint" in one_line_error(capsys)


def test_follow_and_checkpoint_together_are_refused(
    tiny_run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "--logdir", str(tiny_run_dir), "--follow", "--checkpoint", "2"]) == 2
    assert "--follow processes every checkpoint" in one_line_error(capsys)


def test_training_marks_a_finished_run_but_not_one_stopped_by_a_signal(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    trainer = tiny_mt_trainer(tmp_path, "trainer.max_steps=4")
    original_step = trainer.train_step

    def step_then_signal(indices: list[int] | None = None) -> dict[str, float]:
        out = original_step(indices)
        if trainer.step == 2:
            trainer._request_stop(15, None)
        return out

    trainer.train_step = step_then_signal  # type: ignore[method-assign]
    assert trainer.train() == 2
    assert read_finished(tmp_path) is None and trainer.stop_reason == ""
    assert tiny_mt_trainer(tmp_path, "trainer.max_steps=4").train() == 4
    assert read_finished(tmp_path) == {"step": 4, "reason": "trainer.max_steps=4 reached"}
    # Resumed for more steps, the run is unfinished again until it ends.
    trainer = tiny_mt_trainer(tmp_path, "trainer.max_steps=5")
    trainer.train_step = lambda indices=None: (_ for _ in ()).throw(RuntimeError("crash"))
    with pytest.raises(RuntimeError, match="crash"):
        trainer.train()
    assert not (tmp_path / FINISHED_FILE).exists()


def test_follow_processes_every_checkpoint_once_in_step_order_until_finished(
    tiny_run_dir: Path, tmp_path: Path
) -> None:
    logdir = tmp_path / "copy"
    shutil.copytree(tiny_run_dir, logdir)
    (logdir / FINISHED_FILE).unlink()  # as while training goes on
    seen: list[int] = []
    follower = CheckpointFollower(logdir, CPU, use_ema=None)
    thread = threading.Thread(
        target=follower.follow, args=(lambda context, step, suffix: seen.append(step), 0.05)
    )
    thread.start()
    deadline = time.time() + 60
    while len(seen) < 3 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert seen == [2, 4, 6] and thread.is_alive()  # all of them, and it waits for more
    mark_finished(logdir, 6, "trainer.max_steps=6 reached")
    thread.join(timeout=10)
    assert not thread.is_alive() and seen == [2, 4, 6]


def test_follow_waits_for_a_run_that_has_not_started(
    tiny_run_trainer: Callable[[Path], Trainer], tmp_path: Path
) -> None:
    logdir = tmp_path / "later"
    command = [sys.executable, "-m", "seqlab", "eval", "--logdir", str(logdir), "--follow"]
    follower = subprocess.Popen(
        [*command, "--poll-seconds", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stderr is not None
        first = follower.stderr.readline()  # waiting, not "config.json not found"
        assert "waiting for training to start" in first and follower.poll() is None
        tiny_run_trainer(logdir).train()
        out, err = follower.communicate(timeout=180)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    steps = [int(line.split()[1]) for line in out.splitlines() if line.startswith("step ")]
    assert steps == [step for step, _ in list_checkpoints(logdir / "checkpoints")] == [2, 4, 6]
