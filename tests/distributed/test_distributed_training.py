"""Training under torchrun on CPU (gloo), on a slice of the real Bible corpus.

Two DDP processes reach the weights of one process on the same global batches; a checkpoint
saved by two processes resumes in one (and one process's in two FSDP2 processes) on the same
loss curve; FSDP2's loss falls; an error on one rank ends the job promptly with its message;
gradient accumulation trains on K global batches per update.
"""

from __future__ import annotations

import copy
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.distributed.checkpoint import read_sharded_checkpoint, sharded_checkpoint_path
from seqlab.distributed.launch import torchrun_command
from seqlab.train.checkpoint import checkpoint_path, load_checkpoint
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.run_context import build_context
from seqlab.train.trainer import Trainer

# Each torchrun launch costs 10-50 s on a shared 2-core machine: too slow for the default suite.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
        reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
    ),
]

Job = Callable[..., Any]  # the `job` fixture of conftest.py
EXPERIMENT = "mt.bible_en_es.transformer_tiny"
STEPS = 8
SAVE_EVERY = 4
# Float sums in another order (per-rank gradients, then all-reduce) differ in the last bits;
# Adam amplifies that slightly over the steps.
WEIGHT_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}
DROPOUTS = [
    "task.input_dropout_prob",
    "task.encoder.layer.self_attention.dropout_prob",
    "task.encoder.layer.ffn.dropout_prob",
    "task.encoder.layer.residual_dropout_prob",
    "task.decoder.layer.self_attention.dropout_prob",
    "task.decoder.layer.cross_attention.dropout_prob",
    "task.decoder.layer.ffn.dropout_prob",
    "task.decoder.layer.residual_dropout_prob",
]


def overrides(cache_dir: Path, max_steps: int = STEPS) -> list[str]:
    """A tiny run without dropout, so that one and two processes compute the same thing."""
    return [
        f"data.cache_dir={cache_dir}",
        "data.train_limit=200",
        "data.eval_limit=10",
        f"trainer.max_steps={max_steps}",
        f"trainer.checkpoint_every_steps={SAVE_EVERY}",
        "trainer.keep_checkpoints=0",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.log_every_steps=1",
        "trainer.num_threads=1",
        "trainer.schedule.warmup_steps=2",
        "trainer.schedule.total_steps=20",  # the same learning rates whatever max_steps
        # The key projection's bias has an exactly zero gradient (softmax ignores a constant
        # added to every key); Adam with epsilon 1e-9 would blow its rounding noise up into
        # full-size steps that differ between runs.
        "trainer.optimizer.epsilon=1e-6",
        *(f"{key}=0.0" for key in DROPOUTS),
    ]


def make_config(cache_dir: Path, max_steps: int = STEPS) -> ExperimentConfig:
    config = get_experiment(EXPERIMENT)
    config.apply_overrides(overrides(cache_dir, max_steps))
    return config


def seqlab_train(logdir: Path, cache_dir: Path, max_steps: int, *extra: str) -> list[str]:
    sets = [a for o in [*overrides(cache_dir, max_steps), *extra] for a in ("--set", o)]
    return ["train", "--experiment", EXPERIMENT, "--logdir", str(logdir), *sets]


def loss_curve(logdir: Path) -> dict[int, float]:
    events = EventAccumulator(str(logdir / "train"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars("loss")}


def assert_weights_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **WEIGHT_TOLERANCE, msg=name)


@pytest.fixture(scope="module")
def cache_dir(bible_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus and tokenizer, prepared before any rank starts so that they find them ready."""
    prepare = tmp_path_factory.mktemp("prepare")
    build_context(make_config(bible_cache_dir), prepare, train_tokenizer=True)
    return bible_cache_dir


@pytest.fixture(scope="module")
def single_run(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, in this one, STEPS steps."""
    logdir = tmp_path_factory.mktemp("single")
    Trainer(make_config(cache_dir), logdir, show_progress=False).train()
    return logdir


@pytest.fixture(scope="module")
def ddp_run(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory, job: Job) -> Path:
    """Two DDP processes through `seqlab train --nproc 2` (torchrun -m seqlab train)."""
    logdir = tmp_path_factory.mktemp("ddp")
    command = [sys.executable, "-m", "seqlab", *seqlab_train(logdir, cache_dir, STEPS)]
    result, _ = job([*command, "--nproc", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training done at step 8" in result.stdout
    return logdir


def test_two_ddp_processes_reach_the_weights_of_one(single_run: Path, ddp_run: Path) -> None:
    final = sharded_checkpoint_path(ddp_run / "checkpoints", STEPS)
    assert sorted(p.name for p in final.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    expected = load_checkpoint(checkpoint_path(single_run / "checkpoints", STEPS))
    assert_weights_close(read_sharded_checkpoint(final)["model"], expected["model"])
    single, ddp = loss_curve(single_run), loss_curve(ddp_run)
    assert sorted(ddp) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert ddp[step] == pytest.approx(loss, rel=1e-4), step
    # Only rank 0 wrote summaries.
    assert len(list((ddp_run / "train").iterdir())) == 1


def resume_in_one_process(cache_dir: Path, run: Path, logdir: Path, rel: float) -> Trainer:
    """Resumes ``run``'s step-SAVE_EVERY checkpoint in this process, in ``logdir``, up to
    STEPS; checks that the losses are ``run``'s (to ``rel``)."""
    (logdir / "checkpoints").mkdir()
    middle = sharded_checkpoint_path(run / "checkpoints", SAVE_EVERY)
    shutil.copytree(middle, logdir / "checkpoints" / middle.name)
    trainer = Trainer(make_config(cache_dir), logdir, show_progress=False)
    trainer.train()
    assert trainer.step == STEPS
    resumed, uninterrupted = loss_curve(logdir), loss_curve(run)
    assert sorted(resumed) == list(range(SAVE_EVERY + 1, STEPS + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(uninterrupted[step], rel=rel), step
    return trainer


def test_two_process_checkpoint_resumes_in_one_on_the_same_curve(
    cache_dir: Path, ddp_run: Path, tmp_path: Path
) -> None:
    trainer = resume_in_one_process(cache_dir, ddp_run, tmp_path, rel=1e-4)
    final = read_sharded_checkpoint(sharded_checkpoint_path(ddp_run / "checkpoints", STEPS))
    assert_weights_close(trainer.task.state_dict(), final["model"])


def test_fsdp_resumes_a_single_process_checkpoint_and_its_loss_falls(
    cache_dir: Path, single_run: Path, tmp_path: Path, job: Job
) -> None:
    (tmp_path / "checkpoints").mkdir()
    start = checkpoint_path(single_run / "checkpoints", SAVE_EVERY)
    shutil.copy(start, tmp_path / "checkpoints" / start.name)
    max_steps = 20
    args = seqlab_train(tmp_path, cache_dir, max_steps, "trainer.distributed.strategy=fsdp")
    result, _ = job(torchrun_command(2, ["-m", "seqlab", *args]))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_from = tmp_path / "checkpoints" / start.name
    assert f"resumed from {resumed_from} at step {SAVE_EVERY}" in result.stdout + result.stderr
    curve, single = loss_curve(tmp_path), loss_curve(single_run)
    assert sorted(curve) == list(range(SAVE_EVERY + 1, max_steps + 1))
    for step in range(SAVE_EVERY + 1, STEPS + 1):  # the same steps as one process
        assert curve[step] == pytest.approx(single[step], rel=1e-3), step
    first, last = curve[SAVE_EVERY + 1], sum(curve[s] for s in range(max_steps - 2, max_steps + 1))
    assert last / 3 < first - 0.5, curve
    final = read_sharded_checkpoint(sharded_checkpoint_path(tmp_path / "checkpoints", max_steps))
    assert final["step"] == max_steps and final["world_size"] == 2


def test_an_error_on_rank_1_in_training_ends_the_job_promptly_with_its_message(
    cache_dir: Path, tmp_path: Path, job: Job, torchrun: Callable[..., list[str]]
) -> None:
    worker = Path(__file__).with_name("rank_failure_worker.py")
    args = ["trainer", str(tmp_path), *overrides(cache_dir, max_steps=50)]
    result, elapsed = job(torchrun(2, str(worker), *args), timeout=180)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "rank 1 failed on purpose at step 3" in output
    assert elapsed < 120, f"took {elapsed:.0f}s; the process group's timeout is 600 s"


def test_gradient_accumulation_trains_on_k_batches_per_update(
    cache_dir: Path, tmp_path: Path
) -> None:
    config = make_config(cache_dir, max_steps=3)
    config.apply_overrides(["trainer.grad_accum_steps=2", "trainer.checkpoint_every_steps=0"])
    trainer = Trainer(config, tmp_path, show_progress=False)
    untrained = copy.deepcopy(trainer.task)
    first, second = next(trainer.stream), next(trainer.stream)
    trainer.stream.load_state_dict({"epoch": 0, "index": 0})
    metrics = trainer.train_step(next(trainer.stream))
    assert trainer.stream.state_dict() == {"epoch": 0, "index": 2}
    # The logged loss is the token-weighted mean over both batches, at the initial weights.
    losses, weights, tokens = [], [], 0.0
    for indices in (first, second):
        batch = trainer.data.collate(trainer.examples, indices)
        loss, batch_metrics = untrained.compute_loss(batch, untrained.compute_predictions(batch))
        losses.append(float(loss))
        weights.append(batch_metrics["loss"][1])
        tokens += float((1 - batch.src_paddings).sum() + (1 - batch.tgt_paddings).sum())
    expected = sum(x * w for x, w in zip(losses, weights, strict=True)) / sum(weights)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["tokens"] == tokens
    assert trainer.train() == 3
    assert trainer.stream.state_dict() == {"epoch": 0, "index": 6}
