"""Pipeline parallelism under torchrun on CPU (gloo): the tiny Transformer LM cut into two
stages reaches, with 1F1B and (as two data-parallel pipelines of two stages, 4 processes)
with GPipe, the weights one process reaches on the same global batches, and so does the tiny
Transformer MT cut inside its decoder; the LM's checkpoints change layout (one process ->
pipeline mesh -> one process, pipeline -> pipeline -> one process) on the way; stages are
balanced by parameters; layouts that do not fit are refused in one line.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seqlab.core.config import ConfigError
from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.distributed.checkpoint import read_sharded_checkpoint, sharded_checkpoint_path
from seqlab.distributed.pipeline_stages import (
    balanced_stages,
    describe_stages,
    stage_layers,
    stage_module_for,
)
from seqlab.quant.qat import build_task
from seqlab.train.checkpoint import checkpoint_path, load_checkpoint
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.experiment_checks import check_experiment
from seqlab.train.run_context import build_context
from seqlab.train.trainer import Trainer

Job = Callable[..., Any]  # the `job` fixture of conftest.py
EXPERIMENT = "lm.bible_en.transformer_tiny"  # 2 layers, dropout 0
MT_EXPERIMENT = "mt.bible_en_es.transformer_tiny"  # 2 encoder and 2 decoder layers
MT_DROPOUTS = [
    f"task.{key}=0.0"
    for key in [
        "input_dropout_prob",
        *(
            f"{stack}.layer.{part}.dropout_prob"
            for stack in ("encoder", "decoder")
            for part in ("self_attention", "ffn")
        ),
        "decoder.layer.cross_attention.dropout_prob",
        "encoder.layer.residual_dropout_prob",
        "decoder.layer.residual_dropout_prob",
    ]
]
STEPS = 4
WEIGHT_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}

needs_bible = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def overrides(cache_dir: Path, max_steps: int = STEPS) -> list[str]:
    return [
        f"data.cache_dir={cache_dir}",
        "data.train_limit=400",
        "data.eval_limit=10",
        f"trainer.max_steps={max_steps}",
        f"trainer.checkpoint_every_steps={STEPS}",
        "trainer.keep_checkpoints=0",
        "trainer.eval_every_steps=0",
        "trainer.decode_every_steps=0",
        "trainer.log_every_steps=1",
        "trainer.num_threads=1",
        "trainer.schedule.warmup_steps=2",
        "trainer.schedule.total_steps=20",
        "trainer.optimizer.epsilon=1e-6",  # see tests/distributed/test_distributed_training.py
    ]


def make_config(
    cache_dir: Path, max_steps: int = STEPS, experiment: str = EXPERIMENT
) -> ExperimentConfig:
    config = get_experiment(experiment)
    config.apply_overrides(overrides(cache_dir, max_steps))
    if experiment == MT_EXPERIMENT:
        config.apply_overrides(MT_DROPOUTS)
    return config


@pytest.fixture(scope="module")
def cache_dir(bible_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build_context(make_config(bible_cache_dir), tmp_path_factory.mktemp("prepare"), True)
    return bible_cache_dir


@pytest.fixture(scope="module")
def single_run(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints at STEPS and STEPS + 2."""
    logdir = tmp_path_factory.mktemp("single")
    Trainer(make_config(cache_dir, STEPS + 2), logdir, show_progress=False).train()
    return logdir


def pipeline_run(
    logdir: Path,
    cache_dir: Path,
    job: Job,
    *sets: str,
    max_steps: int = STEPS,
    experiment: str = EXPERIMENT,
    nproc: int = 2,
) -> str:
    """`seqlab train --nproc N` with strategy=pipeline and the ``sets``; returns its stdout."""
    sets = (*overrides(cache_dir, max_steps), "trainer.distributed.strategy=pipeline", *sets)
    if experiment == MT_EXPERIMENT:
        sets = (*sets, *MT_DROPOUTS)
    args = [a for o in sets for a in ("--set", o)]
    command = [sys.executable, "-m", "seqlab", "train", "--experiment", experiment]
    result, _ = job([*command, "--logdir", str(logdir), *args, "--nproc", str(nproc)], timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"training done at step {max_steps}" in result.stdout
    return result.stdout


def train_curve(logdir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(logdir / "train"))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def assert_weights_of(logdir: Path, single_run: Path, step: int = STEPS) -> None:
    """The checkpoint of ``logdir`` at ``step`` (a .dcp or a single-process file) has the
    single run's weights."""
    sharded = sharded_checkpoint_path(logdir / "checkpoints", step)
    final = (
        read_sharded_checkpoint(sharded)
        if sharded.is_dir()
        else load_checkpoint(checkpoint_path(logdir / "checkpoints", step))
    )
    expected = load_checkpoint(checkpoint_path(single_run / "checkpoints", step))
    assert sorted(final["model"]) == sorted(expected["model"])
    for name, value in expected["model"].items():
        torch.testing.assert_close(final["model"][name], value, **WEIGHT_TOLERANCE, msg=name)


@pytest.mark.slow
@needs_bible
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_two_stages_reach_the_weights_of_one_process(
    schedule: str, single_run: Path, cache_dir: Path, tmp_path: Path, job: Job
) -> None:
    """Half way, the run changes layout: with GPipe a single-process run's checkpoint resumes
    as two data-parallel pipelines of two stages (4 processes, each pipeline on half of every
    global batch), with 1F1B a pipeline's as a pipeline. At the end the pipeline's checkpoint
    resumes in one process, which trains on from it to the single run's weights."""
    sets = (
        f"trainer.distributed.pipeline_schedule={schedule}",
        "trainer.distributed.pipeline_microbatches=3",  # 16 rows: padded to 18 (8: to 9)
    )
    checkpoints = tmp_path / "checkpoints"
    if schedule == "1f1b":
        pipeline_run(tmp_path, cache_dir, job, *sets, max_steps=STEPS // 2)
        half_way = sharded_checkpoint_path(checkpoints, STEPS // 2)
    else:
        Trainer(make_config(cache_dir, STEPS // 2), tmp_path, show_progress=False).train()
        half_way = checkpoint_path(checkpoints, STEPS // 2)
    if schedule == "1f1b":
        stdout = pipeline_run(tmp_path, cache_dir, job, *sets)
    else:
        mesh = "trainer.distributed.mesh=[2,2]"
        stdout = pipeline_run(tmp_path, cache_dir, job, *sets, mesh, nproc=4)
    assert f"resumed from {half_way} " in stdout
    # Balanced: the last stage holds the final norm besides its copy of the embedding.
    layout = "pipeline stages 0: layer 0 (65,472 parameters); 1: layer 1 (65,600 parameters)"
    assert f"[seqlab] {layout}\n" in stdout
    assert_weights_of(tmp_path, single_run)
    # Counted once per global batch, not once per pipeline or stage.
    tokens, single_tokens = train_curve(tmp_path, "tokens"), train_curve(single_run, "tokens")
    assert tokens == pytest.approx({step: single_tokens[step] for step in tokens})
    # The same loss and gradient norm (over both stages, the shared embedding counted once).
    for tag in ("loss", "grad_norm"):
        single, pipeline = train_curve(single_run, tag), train_curve(tmp_path, tag)
        assert sorted(pipeline) == list(range(1, STEPS + 1))
        for step in pipeline:
            assert pipeline[step] == pytest.approx(single[step], rel=1e-4), (tag, step)

    config = make_config(cache_dir, STEPS + 2)
    assert Trainer(config, tmp_path, show_progress=False).train() == STEPS + 2
    assert_weights_of(tmp_path, single_run, STEPS + 2)


@pytest.mark.slow
@needs_bible
def test_the_mt_model_cut_inside_its_decoder_reaches_the_weights_of_one_process(
    cache_dir: Path, tmp_path: Path, job: Job
) -> None:
    single = tmp_path / "single"
    Trainer(make_config(cache_dir, experiment=MT_EXPERIMENT), single, show_progress=False).train()
    # Stage 0: the encoder and the first decoder layer (it embeds the target too); stage 1:
    # the second decoder layer, the output projection and the loss.
    pipeline_run(
        tmp_path / "pipeline",
        cache_dir,
        job,
        "trainer.distributed.pipeline_boundaries=[3]",
        experiment=MT_EXPERIMENT,
    )
    assert_weights_of(tmp_path / "pipeline", single)


def test_stages_split_the_layers_at_the_boundaries_or_balanced() -> None:
    assert stage_layers(6, 3, (1, 5)) == [range(0, 1), range(1, 5), range(5, 6)]
    # Balanced by layer count; on a tie the later stages take more layers.
    assert stage_layers(5, 2, ()) == [range(0, 2), range(2, 5)]
    assert stage_layers(4, 4, ()) == [range(i, i + 1) for i in range(4)]


@given(
    sizes=st.lists(st.integers(0, 50), min_size=1, max_size=8),
    num_stages=st.integers(1, 8),
)
@settings(max_examples=200, deadline=None)
def test_balanced_stages_have_the_smallest_largest_stage(sizes: list[int], num_stages: int) -> None:
    num_stages = min(num_stages, len(sizes))

    def size(layers: range) -> int:
        return sum(sizes[i] for i in layers)

    ranges = balanced_stages(len(sizes), num_stages, size)
    assert len(ranges) == num_stages and all(len(r) >= 1 for r in ranges)
    assert [i for r in ranges for i in r] == list(range(len(sizes)))
    best = min(
        max(size(range(a, b)) for a, b in itertools.pairwise((0, *cuts, len(sizes))))
        for cuts in itertools.combinations(range(1, len(sizes)), num_stages - 1)
    )
    assert max(size(r) for r in ranges) == best


@pytest.mark.parametrize(
    ("experiment", "sets", "num_stages"),
    [
        (EXPERIMENT, ["task.stack.num_layers=3"], 2),
        (EXPERIMENT, ["task.stack.num_layers=3"], 3),
        (MT_EXPERIMENT, [], 2),
        (MT_EXPERIMENT, [], 3),
        (MT_EXPERIMENT, [], 4),
    ],
)
def test_stages_hold_the_parameters_they_are_balanced_by(
    experiment: str, sets: list[str], num_stages: int
) -> None:
    """Each stage's count is what its module holds; the largest is no larger than an even
    split's (the count of the MT model differs between encoder and decoder layers)."""
    config = get_experiment(experiment)
    config.apply_overrides(sets)
    whole = build_task(config.task, config.quant)
    module = stage_module_for(whole)

    def size(layers: range) -> int:
        return module.num_parameters(whole, layers)

    ranges = stage_layers(module.num_layers(whole), num_stages, (), size)
    for stage, layers in enumerate(ranges):
        held = module(build_task(config.task, config.quant), ranges, stage, contextlib.nullcontext)
        assert sum(p.numel() for p in held.parameters()) == size(layers), layers
    even = stage_layers(module.num_layers(whole), num_stages, ())
    assert max(map(size, ranges)) <= max(map(size, even))


def test_the_stages_are_described_in_one_line() -> None:
    assert describe_stages([range(0, 1), range(1, 4)], [1200, 34]) == (
        "pipeline stages 0: layer 0 (1,200 parameters); 1: layers 1-3 (34 parameters)"
    )


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ([], r"3 stages \(processes\) but the model has 2 layers"),
        (["trainer.distributed.pipeline_microbatches=2"], "fewer than the 3 pipeline stages"),
    ],
)
def test_layouts_that_do_not_fit_are_refused(sets: list[str], message: str) -> None:
    config = get_experiment(EXPERIMENT)
    config.apply_overrides(["trainer.distributed.strategy=pipeline", *sets])
    if sets:  # enough layers for 3 stages: the micro-batches are what is wrong
        config.apply_overrides(["task.stack.num_layers=3"])
    with pytest.raises(ConfigError, match=message):
        check_experiment(config, world_size=3)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["mesh=[2,3]"], r"mesh=\[2, 3\] makes 6 processes, but the job has 4"),
        (["mesh=[4]"], r"mesh=\[4\]: give two degrees \[data, model\]"),
        (["mesh=[4,0]"], r"mesh=\[4, 0\]: give two degrees \[data, model\] of at least 1"),
        (["mesh=[1,4]"], r"4 stages \(processes\) but the model has 2 layers"),
        (["mesh=[2,2]", "strategy=ddp"], r"mesh=\[2, 2\] needs trainer.distributed.strategy"),
    ],
)
def test_meshes_that_do_not_fit_the_job_are_refused(sets: list[str], message: str) -> None:
    config = get_experiment(EXPERIMENT)
    config.apply_overrides([f"trainer.distributed.{s}" for s in ["strategy=pipeline", *sets]])
    with pytest.raises(ConfigError, match=message):
        check_experiment(config, world_size=4)
    config.apply_overrides(
        ["trainer.distributed.strategy=pipeline", "trainer.distributed.mesh=[2,2]"]
    )
    check_experiment(config, world_size=4)  # two pipelines of the model's two layers


def test_boundaries_that_do_not_cut_the_layers_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"pipeline_boundaries=\[2, 1\]: give 2 increasing"):
        stage_layers(4, 3, (2, 1))


def test_models_other_than_the_transformers_are_refused() -> None:
    config = get_experiment("lm.bible_en.lstm_tiny")
    config.apply_overrides(["trainer.distributed.strategy=pipeline"])
    with pytest.raises(ConfigError, match="TransformerLM and TransformerMT only, not LSTMLM"):
        check_experiment(config, world_size=2)
