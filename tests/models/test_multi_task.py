"""Tests for seqlab.models.multi_task."""

from __future__ import annotations

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.core.nested_map import NestedMap
from seqlab.core.registry import get_experiment
from seqlab.data.mt_data import MTExamples, collate
from seqlab.models.mt.transformer_model import TransformerMT
from seqlab.models.multi_task import MultiTaskModel

TINY = "mt.bible_multitask.en_es_es_en_tiny"


def _config(**overrides: str) -> MultiTaskModel.Config:
    config = get_experiment(TINY).task
    for key, value in overrides.items():
        config.set(key, value)
    return config


def _model(config: MultiTaskModel.Config | None = None) -> MultiTaskModel:
    torch.manual_seed(0)
    model = (config or _config()).build()
    model.eval()
    return model


def _batch(task: str) -> NestedMap:
    """Three source/target pairs of ordinary pieces (ids from 6 on), tagged with ``task``."""
    sources = [[10, 11, 12, 13, 3], [14, 15, 3], [16, 17, 18, 19, 20, 21, 3]]
    targets = [[30, 31], [32, 33, 34, 35], [36]]
    batch = collate(MTExamples(sources, targets, ["x"] * 3, ["y"] * 3), [0, 1, 2])
    batch.task = task
    return batch


def _num_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shared_modules_are_one_object_counted_once() -> None:
    model = _model()
    en_es, es_en = model.tasks["en_es"], model.tasks["es_en"]
    for path in ("encoder", "decoder", "embedding"):
        assert en_es.get_submodule(path) is es_en.get_submodule(path)
    # Everything with parameters is shared, so the model is as big as one direction.
    single = _config().tasks["en_es"].build()
    assert isinstance(single, TransformerMT)
    assert _num_parameters(model) == _num_parameters(single) > 0
    # The state dict names shared tensors under both tasks; they are the same storage.
    state = model.state_dict()
    key = "tasks.{}.encoder.final_norm.weight"
    assert state[key.format("en_es")].data_ptr() == state[key.format("es_en")].data_ptr()
    fresh = _config().build()
    fresh.load_state_dict(state)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())


def test_without_sharing_each_task_has_its_own_modules() -> None:
    model = _model(_config(shared="()"))
    assert model.tasks["en_es"].encoder is not model.tasks["es_en"].encoder
    assert _num_parameters(model) == 2 * _num_parameters(_config().tasks["en_es"].build())
    partial = _model(_config(shared="encoder"))
    assert partial.tasks["en_es"].encoder is partial.tasks["es_en"].encoder
    assert partial.tasks["en_es"].decoder is not partial.tasks["es_en"].decoder


def test_shared_module_with_different_configs_is_refused() -> None:
    config = _config(**{"tasks.es_en.decoder.layer.ffn.hidden_dim": "256"})
    with pytest.raises(ConfigError) as info:
        config.build()
    message = str(info.value)
    assert "task.shared ties 'decoder'" in message
    assert "task.tasks.es_en.decoder differs from task.tasks.en_es.decoder" in message
    assert "layer.ffn.hidden_dim: 128 -> 256" in message
    with pytest.raises(ConfigError, match="task.tasks.en_es has no config 'encoder.nothing'"):
        _config(shared="encoder.nothing").build()


def test_probabilities_must_cover_the_tasks() -> None:
    config = _config()
    config.task_probabilities.pop("es_en")
    with pytest.raises(ConfigError, match="task.task_probabilities must give one probability"):
        config.build()


def test_batches_are_routed_by_task_with_its_start_symbol() -> None:
    model = _model()
    en_es, es_en = _batch("en_es"), _batch("es_en")
    assert model.tasks["en_es"].config.start_id == 4 and model.tasks["es_en"].config.start_id == 5
    with torch.no_grad():
        logits_en_es = model.compute_predictions(en_es).logits
        logits_es_en = model.compute_predictions(es_en).logits
        direct = model.tasks["es_en"].compute_predictions(es_en).logits
    assert torch.equal(logits_es_en, direct)
    # Same weights and inputs; only the start symbol differs, which changes every position.
    assert not torch.allclose(logits_en_es[:, 0], logits_es_en[:, 0])
    loss, metrics = model.compute_loss(es_en, NestedMap(logits=logits_es_en))
    assert metrics["es_en/loss"] == metrics["loss"] == (float(loss), metrics["loss"][1])
    assert not any(k.startswith("en_es/") for k in metrics)
    with pytest.raises(ValueError, match="batch has no 'task'"):
        model.compute_predictions(collate(_examples_without_task(), [0]))
    with pytest.raises(ValueError, match="batch.task 'fr_en' is not one of"):
        model.compute_predictions(_batch("fr_en"))


def _examples_without_task() -> MTExamples:
    return MTExamples([[7, 3]], [[8]], ["a"], ["b"])


def test_a_step_on_one_task_trains_the_shared_weights_of_the_other() -> None:
    model = _model()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.tasks["es_en"].encoder.final_norm.weight.detach().clone()
    batch = _batch("en_es")
    loss, _ = model.compute_loss(batch, model.compute_predictions(batch))
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.tasks["es_en"].encoder.final_norm.weight, before)


def test_decode_routes_and_tags_results() -> None:
    model = _model(_config(**{"tasks.es_en.beam_search.beam_size": "2"}))
    batch = _batch("es_en")
    with torch.no_grad():
        out = model.decode(batch)
        direct = model.tasks["es_en"].decode(batch)
    assert out.ids == direct.ids
    # A change through the model's config reaches the sub-task (`seqlab decode --set`).
    model.config.set("tasks.es_en.beam_search.beam_size", "1")
    assert model.tasks["es_en"].config.beam_search.beam_size == 1
    with pytest.raises(ValueError, match=r"decode results mix tasks \['en_es', 'es_en'\]"):
        model.decode_metrics([{"task": "en_es"}, {"task": "es_en"}])
