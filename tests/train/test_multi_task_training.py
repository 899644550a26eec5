"""End to end: the tiny English<->Spanish multi-task model through the standard runner trains
both directions, evaluates and decodes each task into its own directory, resumes bitwise
identically, and the CLI's --task selects one task."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqlab.cli import main
from seqlab.core.config import ConfigError
from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.train.checkpoint import list_checkpoints, load_checkpoint
from seqlab.train.evaler import evaluate
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.run_context import build_context
from seqlab.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

TINY = "mt.bible_multitask.en_es_es_en_tiny"
TASKS = ("en_es", "es_en")
MAX_STEPS = 40
DECODE_LIMIT = 4


def tiny_overrides(cache_dir: Path) -> list[str]:
    overrides = [
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.checkpoint_every_steps=20",
        f"trainer.eval_every_steps={MAX_STEPS}",
        f"trainer.decode_every_steps={MAX_STEPS}",
        f"trainer.decode_limit={DECODE_LIMIT}",
    ]
    for task in TASKS:
        overrides += [
            f"data.tasks.{task}.cache_dir={cache_dir}",
            f"data.tasks.{task}.train_limit=1000",
            f"data.tasks.{task}.eval_limit=20",
        ]
    return overrides


def tiny_config(cache_dir: Path) -> ExperimentConfig:
    return get_experiment(TINY).apply_overrides(tiny_overrides(cache_dir))


def eval_losses(trainer: Trainer) -> dict[str, float]:
    return {
        task: evaluate(trainer.context, f"dev_{task}", show_progress=False)["loss"]
        for task in TASKS
    }


@pytest.fixture(scope="module")
def trained(bible_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A finished 40-step run, and the dev losses of its untrained model."""
    logdir = tmp_path_factory.mktemp("multi_task") / "straight"
    trainer = Trainer(tiny_config(bible_cache_dir), logdir, show_progress=False)
    untrained = eval_losses(trainer)
    trainer.train()
    return trainer, untrained


def test_both_tasks_learn_and_get_their_own_eval_and_decode(trained) -> None:
    trainer, untrained = trained
    logdir = trainer.logdir
    # Shared encoder, decoder and embeddings: one set of weights.
    en_es, es_en = trainer.task.tasks["en_es"], trainer.task.tasks["es_en"]
    assert en_es.encoder is es_en.encoder and en_es.embedding is es_en.embedding
    assert trainer.stream.state_dict()["draws"] == MAX_STEPS
    trained_losses = eval_losses(trainer)
    results = {}
    for task in TASKS:
        assert trained_losses[task] < untrained[task] - 0.5, (task, untrained, trained_losses)
        assert any((logdir / f"eval_dev_{task}").glob("events.out.tfevents.*"))
        decode_dir = logdir / f"decode_dev_{task}"
        score = json.loads((decode_dir / f"score-{MAX_STEPS:08d}.json").read_text())
        assert score["num_sentences"] == DECODE_LIMIT and "bleu" in score
        lines = (decode_dir / f"decodes-{MAX_STEPS:08d}.jsonl").read_text().splitlines()
        results[task] = [json.loads(line) for line in lines]
        assert {r["task"] for r in results[task]} == {task}
    # The two directions decode the same verses: each one's source is the other's reference.
    assert [r["source"] for r in results["en_es"]] == [r["reference"] for r in results["es_en"]]
    assert [r["reference"] for r in results["en_es"]] == [r["source"] for r in results["es_en"]]
    assert not (logdir / "eval_dev").exists() and not (logdir / "decode_dev").exists()


def test_resume_after_a_crash_is_bitwise_identical(
    trained, bible_cache_dir: Path, tmp_path: Path, train_until_crash
) -> None:
    straight, _ = trained
    config = tiny_config(bible_cache_dir)
    config.trainer.eval_every_steps = config.trainer.decode_every_steps = 0
    train_until_crash(Trainer(config, tmp_path, show_progress=False), 30)
    assert list_checkpoints(tmp_path / "checkpoints")[-1][0] == 20
    resumed = Trainer(config, tmp_path, show_progress=False)
    assert resumed.train() == MAX_STEPS
    assert resumed.stream.state_dict() == straight.stream.state_dict()
    a, b = straight.task.state_dict(), resumed.task.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_task_option_selects_one_task(trained, capsys: pytest.CaptureFixture[str]) -> None:
    logdir = trained[0].logdir
    for job in ("eval_dev_es_en", "eval_dev_en_es"):  # the in-training evals' results
        for path in (logdir / job).glob("metrics-*.json"):
            path.unlink()
    assert main(["eval", "--logdir", str(logdir), "--task", "es_en"]) == 0
    out = capsys.readouterr().out
    assert "dev_es_en" in out and "dev_en_es" not in out
    assert (logdir / "eval_dev_es_en" / f"metrics-{MAX_STEPS:08d}.json").exists()
    assert not (logdir / "eval_dev_en_es" / f"metrics-{MAX_STEPS:08d}.json").exists()

    assert main(["eval", "--logdir", str(logdir)]) == 0  # no --task: every task
    assert (logdir / "eval_dev_en_es" / f"metrics-{MAX_STEPS:08d}.json").exists()

    args = ["decode", "--logdir", str(logdir), "--dataset", "test", "--task", "en_es"]
    assert main([*args, "--set", "task.tasks.en_es.beam_search.beam_size=1"]) == 0
    assert (logdir / "decode_test_en_es" / f"hyps-{MAX_STEPS:08d}.txt").exists()
    assert not (logdir / "decode_test_es_en").exists()

    assert main(["eval", "--logdir", str(logdir), "--task", "fr_en"]) == 1
    assert "unknown task 'fr_en'; this run's tasks: ['en_es', 'es_en']" in capsys.readouterr().err


def test_cli_infer_needs_a_task(
    trained, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    logdir = trained[0].logdir
    inputs = tmp_path / "input.txt"
    inputs.write_text("And God said, Let there be light.\nY dijo Dios.\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["infer", "--logdir", str(logdir), "--input", str(inputs), "--task", "en_es"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["infer", "--logdir", str(logdir), "--input", str(inputs)]) == 1
    assert "choose one with --task" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.task_probabilities.en_es=0.7", "task.task_probabilities {'en_es': 0.7"),
        ("task.tasks.es_en.start_id=9", "start_id = 9 is '"),
    ],
)
def test_inconsistent_configs_are_refused_when_the_run_is_built(
    bible_cache_dir: Path, tmp_path: Path, override: str, message: str
) -> None:
    config = tiny_config(bible_cache_dir)
    config.apply_overrides([override])
    if "probabilities" in override:
        config.apply_overrides(["task.task_probabilities.es_en=0.3"])
    with pytest.raises(ConfigError, match=message):
        build_context(config, tmp_path, train_tokenizer=True)


@pytest.mark.slow
def test_sigkill_then_restart_matches_an_uninterrupted_run(
    bible_cache_dir: Path, tmp_path: Path
) -> None:
    overrides = tiny_overrides(bible_cache_dir) + [
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.num_threads=1",
    ]
    sets = [a for o in overrides for a in ("--set", o)]

    def command(logdir: Path) -> list[str]:
        train = ["train", "--experiment", TINY, "--logdir", str(logdir)]
        return [sys.executable, "-m", "seqlab.cli", *train, *sets]

    straight = subprocess.run(command(tmp_path / "straight"), capture_output=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # SIGKILL as soon as the step-20 checkpoint exists: mid-way between two checkpoints.
    deadline = time.time() + 300
    while not list_checkpoints(killed / "checkpoints"):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_checkpoints(killed / "checkpoints")[-1][0] < MAX_STEPS
    resumed = subprocess.run(command(killed), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    a, b = (
        load_checkpoint(list_checkpoints(logdir / "checkpoints")[-1][1])
        for logdir in (tmp_path / "straight", killed)
    )
    assert a["step"] == b["step"] == MAX_STEPS
    assert a["data_stream"] == b["data_stream"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
