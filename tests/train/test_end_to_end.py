"""End to end on a slice of the real Bible corpus: train transformer_tiny, interrupt, resume,
evaluate, decode, score; and the CLI on the same logdir."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import list_checkpoints, load_checkpoint
from seqlab.train.decode_runner import decode_dataset
from seqlab.train.evaler import evaluate
from seqlab.train.run_context import build_context
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

MAX_STEPS = 240


def tiny_config(cache_dir: Path):
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides(
        [
            f"data.cache_dir={cache_dir}",
            "data.train_limit=3000",
            "data.eval_limit=60",
            f"trainer.max_steps={MAX_STEPS}",
            "trainer.checkpoint_every_steps=60",
            "trainer.eval_every_steps=0",
            "trainer.decode_every_steps=0",
        ]
    )
    return config


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_train_interrupt_resume_matches_uninterrupted_and_improves_bleu(
    cache_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(cache_dir)

    # Uninterrupted run.
    straight = Trainer(config, tmp_path / "straight", show_progress=False)
    untrained_context = build_context(config, tmp_path / "straight", train_tokenizer=False)
    untrained_context.task.load_state_dict(straight.task.state_dict())
    _, untrained = decode_dataset(untrained_context, "dev", show_progress=False)
    straight.train()

    # Interrupted after step 150 (checkpoint at 120), then resumed by a new trainer.
    interrupted = Trainer(config, tmp_path / "resumed", show_progress=False)
    original_step = interrupted.train_step

    def step_then_maybe_die(indices: list[int] | None = None) -> dict[str, float]:
        out = original_step(indices)
        if interrupted.step == 150:
            raise Interrupt
        return out

    interrupted.train_step = step_then_maybe_die  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        interrupted.train()
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed" / "checkpoints")][-1] == 120
    resumed = Trainer(config, tmp_path / "resumed", show_progress=False)
    assert resumed.train() == MAX_STEPS

    # Resuming reaches bitwise the same weights as the uninterrupted run.
    a = straight.task.state_dict()
    b = resumed.task.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Eval and decode: the trained model beats the untrained one.
    context = resumed.context
    metrics = evaluate(context, "dev", show_progress=False)
    assert metrics["log_pplx"] < 6.0
    results, decoded = decode_dataset(context, "dev", show_progress=False)
    assert len(results) == 60
    assert decoded["bleu"] > untrained["bleu"] + 0.5, (decoded, untrained)
    assert decoded["bleu_signature"].startswith("nrefs:1")

    # The checkpoint carries the config it was trained with.
    _, path = list_checkpoints(context.checkpoint_dir)[-1]
    assert load_checkpoint(path)["config"]["name"] == "mt.bible_en_es.transformer_tiny"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqlab.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_cli_train_eval_decode_infer(cache_dir: Path, tmp_path: Path) -> None:
    logdir = tmp_path / "log"
    overrides = [
        f"data.cache_dir={cache_dir}",
        "data.train_limit=1000",
        "data.eval_limit=20",
        "trainer.max_steps=40",
        "trainer.checkpoint_every_steps=20",
        "trainer.eval_every_steps=20",
        "trainer.decode_every_steps=40",
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    out = run_cli(
        "train", "--experiment", "mt.bible_en_es.transformer_tiny", "--logdir", str(logdir), *sets
    )
    assert out.returncode == 0, out.stderr
    for name in ("config.txt", "config_diff.txt", "spm.model"):
        assert (logdir / name).exists()
    assert "trainer.max_steps: 200 -> 40" in (logdir / "config_diff.txt").read_text()
    for job in ("train", "eval_dev", "decode_dev"):
        assert any((logdir / job).glob("events.out.tfevents.*")), job

    out = run_cli("eval", "--logdir", str(logdir), "--dataset", "dev")
    assert out.returncode == 0, out.stderr
    assert "log_pplx" in out.stdout

    # A follower job on a finished run processes the newest checkpoint and exits.
    out = run_cli("eval", "--logdir", str(logdir), "--follow", "--poll-seconds", "0.1")
    assert out.returncode == 0, out.stderr
    assert (logdir / "eval_dev" / "metrics-00000040.json").exists()

    out = run_cli("decode", "--logdir", str(logdir), "--dataset", "test")
    assert out.returncode == 0, out.stderr
    score = json.loads((logdir / "decode_test" / "score-00000040.json").read_text())
    assert "bleu" in score and score["num_sentences"] == 20
    hyps = (logdir / "decode_test" / "hyps-00000040.txt").read_text().splitlines()
    assert len(hyps) == 20

    out = subprocess.run(
        [sys.executable, "-m", "seqlab.cli", "infer", "--logdir", str(logdir)],
        input="In the beginning God created the heaven and the earth.\nAnd God said\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2
