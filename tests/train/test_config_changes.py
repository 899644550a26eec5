"""A logdir's config changing between runs: recorded in a dated history with its diff shown,
and refused, naming the key, where it changes the model the checkpoints hold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.core.registry import get_experiment
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.quant.qat import build_task
from seqlab.train.config_changes import (
    CONFIG_HISTORY_DIR,
    ModelChangeError,
    check_same_model,
    parameter_shapes,
)
from seqlab.train.run_context import read_logdir_config
from seqlab.train.trainer import Trainer

TINY = "mt.bible_en_es.transformer_tiny"


@pytest.mark.parametrize("name", [TINY, "asr.flite_bible.las_tiny", "lm.bible_en.lstm_tiny"])
def test_parameter_shapes_are_those_of_the_built_model(name: str) -> None:
    config = get_experiment(name)
    built = build_task(config.task, config.quant).state_dict()
    assert parameter_shapes(config) == {k: tuple(v.shape) for k, v in built.items()}


def changed(*overrides: str):
    return get_experiment(TINY).apply_overrides(list(overrides))


def test_changes_that_keep_the_model_pass() -> None:
    trained = get_experiment(TINY)
    config = changed(
        "trainer.max_steps=7",
        "trainer.schedule.peak_learning_rate=0.1",
        "task.beam_search.beam_size=2",
        "task.input_dropout_prob=0.3",
        "data.max_tokens=17",
    )
    check_same_model(trained, config, Path("run/checkpoints"), "advice")
    # A language model's sampling settings (`seqlab infer --set task.sampler.temperature=0.7`).
    lm = get_experiment("lm.bible_en.transformer_tiny")
    sampled = lm.copy().apply_overrides(
        ["task.sampler.temperature=0.7", "task.sampler.top_p=0.9", "task.sampler.max_new_tokens=5"]
    )
    check_same_model(lm, sampled, Path("run/checkpoints"), "advice")


def test_a_change_of_shape_is_refused_naming_only_its_keys() -> None:
    trained = get_experiment(TINY)
    config = changed("task.encoder.num_layers=3", "task.input_dropout_prob=0.3")
    with pytest.raises(ModelChangeError) as error:
        check_same_model(trained, config, Path("run/checkpoints"), "train in a new --logdir")
    message = str(error.value)
    assert message.startswith("task.encoder.num_layers: 2 -> 3 changes the model that the ")
    assert "dropout" not in message and "\n" not in message
    assert "checkpoints in run/checkpoints hold (parameter 'encoder.layers.2." in message
    assert message.endswith("; train in a new --logdir")


def test_a_width_change_names_the_keys_that_shape_parameters() -> None:
    """Of the model width's keys, those that shape parameters, not those of parameter-free
    layers (sinusoidal positions)."""
    trained = get_experiment(TINY)
    width = [
        f"{key}=96"
        for key, value in trained.flatten().items()
        if key.startswith("task.") and value == 64 and not key.endswith("vocab_size")
    ]
    assert "task.positions.model_dim=96" in width and len(width) > 3
    with pytest.raises(ModelChangeError) as error:
        check_same_model(trained, changed(*width), Path("ckpts"), "advice")
    message = str(error.value)
    assert "task.embedding.model_dim: 64 -> 96; task.encoder.layer.ffn.model_dim: 64" in message
    assert "task.positions.model_dim" not in message
    assert "(parameter 'embedding.weight': [1000, 64] -> [1000, 96]); advice" in message


needs_bible = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)


def history(logdir: Path) -> list[Path]:
    return sorted((logdir / CONFIG_HISTORY_DIR).iterdir())


@needs_bible
def test_resuming_with_a_new_config_records_it_and_prints_the_diff(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_mt_trainer(tmp_path, "trainer.max_steps=2").train()
    first = history(tmp_path)
    assert len(first) == 1 and first[0].name.endswith("-step00000000.txt")
    assert "trainer.max_steps = 2\n" in first[0].read_text()
    # The same config again: nothing new to record.
    tiny_mt_trainer(tmp_path, "trainer.max_steps=2").train()
    assert history(tmp_path) == first
    capsys.readouterr()

    overrides = ("trainer.max_steps=3", "trainer.schedule.peak_learning_rate=0.001")
    assert tiny_mt_trainer(tmp_path, *overrides).train() == 3
    out = capsys.readouterr().out
    entries = history(tmp_path)
    assert len(entries) == 2 and entries[0] == first[0]
    assert entries[1].name.endswith("-step00000002.txt")
    assert (
        f"[seqlab] config changed since the last run, from step 2 on (recorded in {entries[1]})"
        in out
    )
    assert "[seqlab]   trainer.max_steps: 2 -> 3\n" in out
    assert "[seqlab]   trainer.schedule.peak_learning_rate: 0.003 -> 0.001\n" in out
    text = entries[1].read_text()
    assert "#   trainer.max_steps: 2 -> 3\n" in text and "\ntrainer.max_steps = 3\n" in text
    assert read_logdir_config(tmp_path).trainer.max_steps == 3


@needs_bible
def test_a_logdir_without_history_first_records_its_previous_config(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    tiny_mt_trainer(tmp_path, "trainer.max_steps=2").train()
    for entry in history(tmp_path):  # as a logdir from before histories were kept
        entry.unlink()
    (tmp_path / CONFIG_HISTORY_DIR).rmdir()
    tiny_mt_trainer(tmp_path, "trainer.max_steps=3").train()
    before, after = history(tmp_path)
    assert "before its history was kept" in before.read_text()
    assert "\ntrainer.max_steps = 2\n" in before.read_text()
    assert "\ntrainer.max_steps = 3\n" in after.read_text()


@needs_bible
def test_resuming_with_another_model_shape_is_refused_before_anything_changes(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    tiny_mt_trainer(tmp_path, "trainer.max_steps=2").train()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ModelChangeError, match=r"^task\.decoder\.num_layers: 2 -> 1 changes"):
        tiny_mt_trainer(tmp_path, "trainer.max_steps=3", "task.decoder.num_layers=1")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    # A fresh logdir takes any shape: there is no checkpoint to keep.
    fresh = tiny_mt_trainer(tmp_path / "new", "trainer.max_steps=1", "task.decoder.num_layers=1")
    assert fresh.train() == 1
