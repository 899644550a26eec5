"""Tensor parallelism (``trainer.distributed.strategy=tensor``) under torchrun on CPU (gloo).

Two processes, each with half of every attention's heads, feed-forward width and
vocabulary, reach the weights one process reaches on the same global batches, and so do four
as two data-parallel groups of two; the checkpoint of two resumes in one process on the same
loss curve, and two resume their own and a single-process checkpoint.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_distributed_training import (  # the tiny runs of the DDP and FSDP2 tests
    SAVE_EVERY,
    STEPS,
    Job,
    cache_dir,  # noqa: F401 (a fixture)
    loss_curve,
    resume_in_one_process,
    seqlab_train,
    single_run,  # noqa: F401 (a fixture)
)

from seqlab.distributed.checkpoint import read_sharded_checkpoint, sharded_checkpoint_path
from seqlab.train.checkpoint import checkpoint_path, load_checkpoint

pytestmark = pytest.mark.slow  # (and the Bible-modules skip of test_distributed_training)

# Partial sums of the split layers are added in another order than one process adds them.
WEIGHT_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def scalars(logdir: Path, tag: str) -> list[float]:
    """The training summary ``tag``'s values, step by step."""
    events = EventAccumulator(str(logdir / "train"))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def assert_weights_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], **WEIGHT_TOLERANCE, msg=name)


@pytest.fixture(scope="module")
def tensor_run(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory, job: Job) -> Path:  # noqa: F811
    """Two tensor-parallel processes through `seqlab train --nproc 2`."""
    logdir = tmp_path_factory.mktemp("tensor")
    args = seqlab_train(logdir, cache_dir, STEPS, "trainer.distributed.strategy=tensor")
    result, _ = job([sys.executable, "-m", "seqlab", *args, "--nproc", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training done at step 8" in result.stdout
    return logdir


def test_two_tensor_parallel_processes_reach_the_weights_of_one(
    single_run: Path,  # noqa: F811
    tensor_run: Path,
) -> None:
    final = read_sharded_checkpoint(sharded_checkpoint_path(tensor_run / "checkpoints", STEPS))
    expected = load_checkpoint(checkpoint_path(single_run / "checkpoints", STEPS))
    assert_weights_close(final["model"], expected["model"])
    # The split weights' optimizer state too (Adam's moments, keyed by parameter index).
    for index, moments in expected["optimizer"]["state"].items():
        for name, value in moments.items():
            torch.testing.assert_close(
                final["optimizer"]["state"][index][name], value, **WEIGHT_TOLERANCE
            )
    assert final["optimizer"]["param_groups"][0]["foreach"] is True  # as configured
    single, tensor = loss_curve(single_run), loss_curve(tensor_run)
    assert sorted(tensor) == list(range(1, STEPS + 1))
    for step, loss in single.items():  # the whole batch's loss, counted once
        assert tensor[step] == pytest.approx(loss, rel=1e-5), step
    # Counts are the global batch's, not once per rank; the gradient norm covers every shard.
    for tag in ("tokens", "num_target_tokens", "grad_norm"):
        assert scalars(tensor_run, tag) == pytest.approx(scalars(single_run, tag), rel=1e-5), tag


def test_a_tensor_parallel_checkpoint_resumes_in_one_process_on_the_same_curve(
    cache_dir: Path,  # noqa: F811
    tensor_run: Path,
    tmp_path: Path,
) -> None:
    trainer = resume_in_one_process(cache_dir, tensor_run, tmp_path, rel=1e-5)
    final = read_sharded_checkpoint(sharded_checkpoint_path(tensor_run / "checkpoints", STEPS))
    assert_weights_close(trainer.task.state_dict(), final["model"])


@pytest.mark.parametrize("source", ["tensor", "single"])
def test_tensor_parallelism_resumes_its_own_and_a_single_process_checkpoint(
    source: str,
    cache_dir: Path,  # noqa: F811
    single_run: Path,  # noqa: F811
    tensor_run: Path,
    tmp_path: Path,
    job: Job,
) -> None:
    run = tensor_run if source == "tensor" else single_run
    middle = (sharded_checkpoint_path if source == "tensor" else checkpoint_path)(
        run / "checkpoints", SAVE_EVERY
    )
    (tmp_path / "checkpoints").mkdir()
    copy = shutil.copytree if middle.is_dir() else shutil.copy
    copy(middle, tmp_path / "checkpoints" / middle.name)
    args = seqlab_train(tmp_path, cache_dir, STEPS, "trainer.distributed.strategy=tensor")
    result, _ = job([sys.executable, "-m", "seqlab", *args, "--nproc", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, uninterrupted = loss_curve(tmp_path), loss_curve(run)
    assert sorted(resumed) == list(range(SAVE_EVERY + 1, STEPS + 1))
    for step, loss in resumed.items():
        assert loss == pytest.approx(uninterrupted[step], rel=1e-5), step
    final = read_sharded_checkpoint(sharded_checkpoint_path(tmp_path / "checkpoints", STEPS))
    expected = read_sharded_checkpoint(sharded_checkpoint_path(tensor_run / "checkpoints", STEPS))
    assert_weights_close(final["model"], expected["model"])


def test_two_data_parallel_groups_of_two_reach_the_weights_of_one(
    cache_dir: Path,  # noqa: F811
    single_run: Path,  # noqa: F811
    tmp_path: Path,
    job: Job,
) -> None:
    mesh = ["trainer.distributed.strategy=tensor", "trainer.distributed.mesh=[2,2]"]
    args = seqlab_train(tmp_path, cache_dir, STEPS, *mesh)
    result, _ = job([sys.executable, "-m", "seqlab", *args, "--nproc", "4"], timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    final = read_sharded_checkpoint(sharded_checkpoint_path(tmp_path / "checkpoints", STEPS))
    expected = load_checkpoint(checkpoint_path(single_run / "checkpoints", STEPS))
    assert final["world_size"] == 4
    assert_weights_close(final["model"], expected["model"])
    for tag in ("loss", "tokens", "num_target_tokens", "grad_norm"):
        assert scalars(tmp_path, tag) == pytest.approx(scalars(single_run, tag), rel=1e-5), tag
