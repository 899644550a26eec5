"""Tests for seqlab.core.registry."""

from __future__ import annotations

import pytest

from seqlab.core import registry
from seqlab.core.registry import (
    UnknownExperimentError,
    get_experiment,
    list_experiments,
    register_experiment,
)
from seqlab.train.experiment import ExperimentConfig

BIBLE = [
    "mt.bible_en_es.transformer_base",
    "mt.bible_en_es.transformer_small",
    "mt.bible_en_es.transformer_tiny",
]


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the loaded registry, so test registrations do not leak."""
    list_experiments()  # load the real experiments first
    experiments = dict(registry._EXPERIMENTS)
    monkeypatch.setattr(registry, "_EXPERIMENTS", experiments)
    return experiments


def test_list_is_sorted_and_has_the_bible_experiments() -> None:
    names = list_experiments()
    assert names == sorted(names)
    assert set(BIBLE) <= set(names)


def test_get_returns_a_fresh_named_config() -> None:
    first = get_experiment("mt.bible_en_es.transformer_tiny")
    assert isinstance(first, ExperimentConfig)
    assert first.name == "mt.bible_en_es.transformer_tiny"
    assert first.task.encoder.num_layers == 2
    first.task.encoder.num_layers = 99
    second = get_experiment("mt.bible_en_es.transformer_tiny")
    assert second is not first
    assert second.task.encoder.num_layers == 2


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UnknownExperimentError) as info:
        get_experiment("mt.bible_en_es.transformer_tiyn")
    message = str(info.value)
    assert message.startswith(
        "unknown experiment 'mt.bible_en_es.transformer_tiyn'; did you mean: "
    )
    assert "mt.bible_en_es.transformer_tiny" in message
    assert "`seqlab list`" in message
    assert isinstance(info.value, KeyError)


def test_unknown_name_without_close_matches() -> None:
    with pytest.raises(UnknownExperimentError) as info:
        get_experiment("zzzz")
    assert str(info.value) == "unknown experiment 'zzzz' (`seqlab list` shows them all)"


def test_register_adds_to_list_and_get(isolated_registry: dict) -> None:
    @register_experiment("test.registry.example")
    def example() -> ExperimentConfig:
        return ExperimentConfig(seed=7)

    assert "test.registry.example" in list_experiments()
    config = get_experiment("test.registry.example")
    assert config.seed == 7
    assert config.name == "test.registry.example"


def test_duplicate_names_are_refused(isolated_registry: dict) -> None:
    def first() -> ExperimentConfig:
        return ExperimentConfig()

    def second() -> ExperimentConfig:
        return ExperimentConfig()

    register_experiment("test.registry.dup")(first)
    register_experiment("test.registry.dup")(first)  # the same function again is harmless
    with pytest.raises(ValueError, match="experiment 'test.registry.dup' is registered twice"):
        register_experiment("test.registry.dup")(second)
    assert isolated_registry["test.registry.dup"] is first
    with pytest.raises(ValueError, match="registered twice"):
        register_experiment("mt.bible_en_es.transformer_tiny")(second)


def test_registry_changes_do_not_leak() -> None:
    assert "test.registry.example" not in list_experiments()
    assert "test.registry.dup" not in list_experiments()
