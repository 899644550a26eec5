"""Tests for seqlab.core.config."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from typing import Any, Literal

import pytest

import seqlab.core.config as config_module
from seqlab.core.config import Config, ConfigError, Configurable, all_keys, param
from seqlab.core.registry import get_experiment
from seqlab.layers.cross_entropy import LabelSmoothedCrossEntropy
from seqlab.models.mt.transformer_model import TransformerMT
from seqlab.train.experiment import ExperimentConfig

TINY = "mt.bible_en_es.transformer_tiny"


class Activation(enum.Enum):
    RELU = "relu"
    GELU = "gelu"


class Encoder(Configurable):
    """A stand-in owner class: records what it was built with."""

    @dataclasses.dataclass
    class Config(Config):
        num_layers: int = param(2, doc="Number of layers.")
        dropout_prob: float = param(0.1, doc="Dropout probability.")
        use_bias: bool = param(True, doc="Whether projections have a bias.")
        name: str = param("enc", doc="A name.")
        max_length: int | None = param(None, doc="Optional cap on the input length.")
        kernel_sizes: tuple[int, ...] = param((3, 5), doc="Convolution widths.")
        norm: Literal["layer", "rms"] = param("layer", doc="Normalization kind.")
        activation: Activation = param(Activation.RELU, doc="Nonlinearity.")

    def __init__(self, config: Config, extra: Any = None) -> None:
        self.config = config
        self.extra = extra


class Model(Configurable):
    @dataclasses.dataclass
    class Config(Config):
        encoder: Encoder.Config = param(Encoder.Config(), doc="The encoder.")
        vocab_size: int = param(100, doc="Vocabulary size.")
        tags: list[str] = param([], doc="Free-form labels.")
        stages: tuple[Encoder.Config, ...] = param((Encoder.Config(),), doc="Stacked stages.")

    def __init__(self, config: Config) -> None:
        self.config = config


@dataclasses.dataclass
class Root(Config):
    model: Model.Config = param(Model.Config(), doc="The model.")
    seed: int = param(1, doc="Seed.")


@pytest.fixture
def trust_this_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets from_dict import the config classes defined in this test module."""
    prefixes = (*config_module._TRUSTED_MODULE_PREFIXES, Root.__module__)
    monkeypatch.setattr(config_module, "_TRUSTED_MODULE_PREFIXES", prefixes)


# ---- printing -----------------------------------------------------------------------------


def test_to_text_is_sorted_key_value_lines_with_cls() -> None:
    expected = (
        "encoder.activation = RELU\n"
        "encoder.cls = 'Encoder'\n"
        "encoder.dropout_prob = 0.1\n"
        "encoder.kernel_sizes = (3, 5)\n"
        "encoder.max_length = None\n"
        "encoder.name = 'enc'\n"
        "encoder.norm = 'layer'\n"
        "encoder.num_layers = 2\n"
        "encoder.use_bias = True\n"
        "stages = (Encoder.Config(num_layers=2, dropout_prob=0.1, use_bias=True, name='enc', "
        "max_length=None, kernel_sizes=(3, 5), norm='layer', activation=<Activation.RELU: "
        "'relu'>),)\n"
        "tags = []\n"
        "vocab_size = 100\n"
    )
    assert Model.Config().to_text() == expected


def test_to_text_of_real_experiment() -> None:
    text = get_experiment(TINY).to_text()
    lines = text.splitlines()
    assert lines == sorted(lines)
    assert all(" = " in line for line in lines)
    assert "task.cls = 'TransformerMT'" in lines
    assert "task.encoder.num_layers = 2" in lines
    assert "trainer.eval_datasets = ('dev',)" in lines
    assert f"name = '{TINY}'" in lines


def test_every_printed_value_can_be_set_back() -> None:
    # Copying a line of the printed config into --set must reproduce the same config.
    config = get_experiment(TINY)
    for line in config.to_text().splitlines():
        key, text = line.split(" = ", 1)
        if key.endswith(".cls"):
            continue
        changed = config.copy()
        changed.set(key, text)
        assert changed.to_text() == config.to_text(), key


def test_diff_lists_changed_leaves() -> None:
    base = Root()
    other = base.copy()
    other.model.encoder.num_layers = 6
    other.model.encoder.activation = Activation.GELU
    assert other.diff(base) == (
        "model.encoder.activation: RELU -> GELU\nmodel.encoder.num_layers: 2 -> 6\n"
    )
    assert base.diff(base.copy()) == ""


def test_diff_notices_type_and_class_changes() -> None:
    base = Root()
    other = base.copy()
    other.model.encoder.dropout_prob = 0  # int where a float was
    assert other.diff(base) == "model.encoder.dropout_prob: 0.1 -> 0\n"

    real = get_experiment(TINY)
    swapped = real.copy()
    swapped.task.loss = Encoder.Config()
    diff = swapped.diff(real)
    assert "task.loss.cls: 'LabelSmoothedCrossEntropy' -> 'Encoder'" in diff
    assert "task.loss.label_smoothing: 0.1 -> '<absent>'" in diff
    assert "task.loss.num_layers: '<absent>' -> 2" in diff


def test_describe_gives_every_leaf_its_doc() -> None:
    docs = Root().describe()
    assert docs["model.encoder.num_layers"] == "Number of layers."
    assert docs["seed"] == "Seed."
    assert set(docs) == set(all_keys(Root()))


# ---- overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("num_layers", "6", 6),
        ("num_layers", " 1_000 ", 1000),
        ("num_layers", "1e3", 1000),
        ("dropout_prob", "0.25", 0.25),
        ("dropout_prob", "1", 1.0),
        ("use_bias", "false", False),
        ("use_bias", "True", True),
        ("use_bias", "yes", True),
        ("use_bias", "0", False),
        ("name", "dec", "dec"),
        ("name", "'two words'", "two words"),
        ("name", '"None"', "None"),
        ("max_length", "None", None),
        ("max_length", "null", None),
        ("max_length", "7", 7),
        ("kernel_sizes", "(1, 2)", (1, 2)),
        ("kernel_sizes", "[4]", (4,)),
        ("kernel_sizes", "(3)", (3,)),
        ("kernel_sizes", "1,2,3", (1, 2, 3)),
        ("kernel_sizes", "9", (9,)),
        ("kernel_sizes", "()", ()),
        ("kernel_sizes", "", ()),
        ("norm", "rms", "rms"),
        ("norm", "'rms'", "rms"),
        ("activation", "GELU", Activation.GELU),
        ("activation", "gelu", Activation.GELU),
    ],
)
def test_set_coerces_by_declared_type(key: str, text: str, expected: Any) -> None:
    config = Encoder.Config()
    config.set(key, text)
    value = getattr(config, key)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("num_layers", "two", "expects an int, got 'two'"),
        ("num_layers", "1.5", "expects an int, got '1.5'"),
        ("dropout_prob", "high", "expects a float, got 'high'"),
        ("use_bias", "maybe", "expects a bool (true/false), got 'maybe'"),
        ("max_length", "long", "expects an int, got 'long'"),
        ("kernel_sizes", "(1, 'x')", "expects an int, got 'x'"),
        ("kernel_sizes", "(1,", "expects a tuple of int, got '(1,'"),
        ("norm", "batch", "expects one of ['layer', 'rms'], got 'batch'"),
        ("activation", "tanh", "expects one of ['RELU', 'GELU'], got 'tanh'"),
    ],
)
def test_set_wrong_type_names_key_and_expected_type(key: str, text: str, message: str) -> None:
    config = Root()
    with pytest.raises(ConfigError) as info:
        config.set(f"model.encoder.{key}", text)
    assert str(info.value) == f"'model.encoder.{key}' {message}"
    assert config == Root()  # nothing was changed


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("model.encoder.num_layer", "model.encoder.num_layers"),
        ("model.encodr.num_layers", "model.encoder.num_layers"),
        ("model.num_layers", "model.encoder.num_layers"),
        ("model.vocab", "model.vocab_size"),
        ("seed.value", "seed"),
    ],
)
def test_unknown_key_names_key_and_nearest_match(key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        Root().set(key, "3")
    assert str(info.value) == f"unknown key '{key}'; did you mean '{suggestion}'?"


def test_unknown_key_in_real_experiment() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'task\.encoder\.num_layers'\?"):
        get_experiment(TINY).set("task.encoder.num_layer", "3")


def test_setting_a_section_is_refused() -> None:
    config = Root()
    with pytest.raises(ConfigError) as info:
        config.set("model.encoder", "3")
    assert "'model.encoder' is a config section" in str(info.value)
    assert "'model.encoder.num_layers'" in str(info.value)
    assert isinstance(config.model.encoder, Encoder.Config)


def test_apply_overrides_in_order() -> None:
    config = get_experiment(TINY)
    out = config.apply_overrides(
        [
            "task.encoder.num_layers = 4",
            "trainer.schedule.kind=linear",
            "data.tokenizer.model_type=bpe",
            "task.encoder.num_layers=5",
            "trainer.eval_datasets=dev,test",
            "data.train_path=a=b.tsv",  # only the first '=' splits
        ]
    )
    assert out is config
    assert config.task.encoder.num_layers == 5
    assert config.trainer.schedule.kind == "linear"
    assert config.data.tokenizer.model_type == "bpe"
    assert config.trainer.eval_datasets == ("dev", "test")
    assert config.data.train_path == "a=b.tsv"


def test_apply_overrides_refuses_items_without_equals() -> None:
    with pytest.raises(ConfigError, match="must look like 'a.b.c=value'"):
        Root().apply_overrides(["seed"])


# ---- serialization ------------------------------------------------------------------------


def test_real_experiment_round_trips_through_json() -> None:
    config = get_experiment(TINY)
    config.trainer.eval_datasets = ("dev", "test")
    restored = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert restored.to_text() == config.to_text()
    assert type(restored) is ExperimentConfig
    assert type(restored.task) is TransformerMT.Config
    assert type(restored.trainer.eval_datasets) is tuple


def test_local_config_round_trips_through_json(trust_this_module: None) -> None:
    config = Root()
    config.model.encoder.max_length = 12
    config.model.encoder.kernel_sizes = (7,)
    config.model.encoder.activation = Activation.GELU
    config.model.tags = ["a", "b"]
    data = json.loads(json.dumps(config.to_dict()))
    assert data["model"]["encoder"]["activation"] == "GELU"
    restored = Config.from_dict(data)
    assert restored == config
    assert restored.model.encoder.activation is Activation.GELU
    assert type(restored.model.encoder.kernel_sizes) is tuple
    assert type(restored.model.stages[0]) is Encoder.Config


def test_from_dict_refuses_classes_outside_seqlab() -> None:
    with pytest.raises(ConfigError, match="not part of seqlab"):
        Config.from_dict(Root().to_dict())
    data = get_experiment(TINY).to_dict()
    data["task"]["loss"]["__class__"] = "evil_module_for_seqlab_tests:Payload"
    with pytest.raises(ConfigError, match="refusing to load config class"):
        Config.from_dict(data)
    assert "evil_module_for_seqlab_tests" not in sys.modules
    for path in ("os:system", "seqlabx.evil:Config", "subprocess:Popen"):
        with pytest.raises(ConfigError, match="not part of seqlab"):
            Config.from_dict({"__class__": path})


def test_from_dict_refuses_non_config_and_missing_classes() -> None:
    with pytest.raises(ConfigError, match="is not a config class"):
        Config.from_dict({"__class__": "seqlab.core.config:ConfigError"})
    with pytest.raises(ConfigError, match="does not exist"):
        Config.from_dict({"__class__": "seqlab.core.config:NoSuchConfig"})


def test_from_dict_refuses_unknown_field() -> None:
    data = get_experiment(TINY).to_dict()
    data["trainer"]["no_such_field"] = 1
    with pytest.raises(ConfigError, match="has no field 'no_such_field'"):
        Config.from_dict(data)


# ---- build and copy -----------------------------------------------------------------------


def test_build_constructs_owner_with_a_copy() -> None:
    config = Encoder.Config(num_layers=3)
    encoder = config.build(extra="x")
    assert isinstance(encoder, Encoder)
    assert encoder.extra == "x"
    assert encoder.config == config
    assert encoder.config is not config
    assert isinstance(Root().model.build(), Model)
    loss = get_experiment(TINY).task.loss.build()
    assert isinstance(loss, LabelSmoothedCrossEntropy)


def test_build_without_owner_is_refused() -> None:
    with pytest.raises(ConfigError, match="Root is not nested in a class"):
        Root().build()


def test_copy_is_deep() -> None:
    config = Root()
    config.model.tags.append("x")
    clone = config.copy()
    assert clone == config
    clone.model.encoder.num_layers = 9
    clone.model.tags.append("y")
    clone.model.stages[0].num_layers = 9
    assert config.model.encoder.num_layers == 2
    assert config.model.tags == ["x"]
    assert config.model.stages[0].num_layers == 2

    real = get_experiment(TINY)
    real_clone = real.copy()
    real_clone.task.encoder.layer.ffn.hidden_dim = 1
    assert real.task.encoder.layer.ffn.hidden_dim == 128


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Model.Config(), Model.Config()
    a.tags.append("x")
    a.encoder.num_layers = 9
    a.stages[0].num_layers = 9
    assert b.tags == []
    assert b.encoder.num_layers == 2
    assert b.stages[0].num_layers == 2


# ---- dict fields (named sub-configs) --------------------------------------------------------


@dataclasses.dataclass
class Tasks(Config):
    encoders: dict[str, Encoder.Config] = param(
        {"en_es": Encoder.Config(), "es_en": Encoder.Config(num_layers=3)}, doc="Per task."
    )
    weights: dict[str, float] = param({"en_es": 0.5, "es_en": 0.5}, doc="Task weights.")
    empty: dict[str, int] = param({}, doc="Nothing yet.")


def test_dict_fields_print_set_and_describe_per_entry() -> None:
    config = Tasks()
    lines = config.to_text().splitlines()
    assert "encoders.en_es.cls = 'Encoder'" in lines
    assert "encoders.es_en.num_layers = 3" in lines
    assert "weights.es_en = 0.5" in lines
    assert "empty = {}" in lines
    config.set("encoders.es_en.num_layers", "4")
    config.set("weights.en_es", "0.25")
    assert config.encoders["es_en"].num_layers == 4 and config.encoders["en_es"].num_layers == 2
    assert config.weights == {"en_es": 0.25, "es_en": 0.5}
    assert config.diff(Tasks()) == (
        "encoders.es_en.num_layers: 3 -> 4\nweights.en_es: 0.5 -> 0.25\n"
    )
    with pytest.raises(ConfigError, match="'weights.en_es' expects a float, got 'half'"):
        config.set("weights.en_es", "half")
    with pytest.raises(ConfigError, match="unknown key 'weights.fr'"):
        config.set("weights.fr", "1")
    with pytest.raises(ConfigError, match="'encoders' is a config section.*'encoders.en_es'"):
        config.set("encoders", "1")
    docs = config.describe()
    assert docs["encoders.es_en.num_layers"] == "Number of layers."
    assert docs["weights.en_es"] == "Task weights."


def test_dict_fields_round_trip_through_json(trust_this_module: None) -> None:
    config = Tasks()
    config.encoders["es_en"].activation = Activation.GELU
    restored = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.encoders["es_en"], Encoder.Config)
    copied = config.copy()
    copied.encoders["en_es"].num_layers = 9
    assert config.encoders["en_es"].num_layers == 2


class Scheduler(Configurable):
    """Stand-in base of a family of classes a config section may switch between."""

    @dataclasses.dataclass
    class Config(Config):
        peak: float = param(1.0, doc="Peak value.")


class StepScheduler(Scheduler):
    @dataclasses.dataclass
    class Config(Scheduler.Config):
        every: int = param(10, doc="Steps between drops.")


class Trainer(Configurable):
    @dataclasses.dataclass
    class Config(Config):
        schedule: Scheduler.Config = param(Scheduler.Config(), doc="The schedule.")
        extra: Scheduler.Config | None = param(None, doc="An optional section.")


def test_set_cls_switches_a_section_and_keeps_shared_fields() -> None:
    config = Trainer.Config().apply_overrides(["schedule.peak=3", "schedule.cls=StepScheduler"])
    assert type(config.schedule) is StepScheduler.Config
    assert config.schedule.peak == 3.0 and config.schedule.every == 10
    assert "schedule.cls = 'StepScheduler'" in config.to_text()
    config.apply_overrides(["schedule.every=5", "extra.cls=Scheduler"])
    assert config.schedule.every == 5 and type(config.extra) is Scheduler.Config
    config.apply_overrides(["extra.cls=None"])
    assert config.extra is None


def test_set_cls_refuses_unknown_classes_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"'schedule.cls'.*did you mean 'StepScheduler'"):
        Trainer.Config().apply_overrides(["schedule.cls=StepSchedular"])
    with pytest.raises(ConfigError, match="not a class this section accepts"):
        Trainer.Config().apply_overrides(["schedule.cls=Encoder"])
    with pytest.raises(ConfigError, match="or 'schedule.cls' to change its class"):
        Trainer.Config().apply_overrides(["schedule=3"])


def test_set_cls_switches_a_registered_experiments_optimizer() -> None:
    config = get_experiment(TINY).apply_overrides(["trainer.optimizer.cls=SGD"])
    assert type(config.trainer.optimizer).__qualname__ == "SGD.Config"


@dataclasses.dataclass
class Bounded(Config):
    steps: int = param(1, doc="At least one.", at_least=1)
    prob: float = param(0.0, doc="A probability below one.", at_least=0, below=1)
    kind: Literal["a", "b"] = param("a", doc="An enumeration.")
    sizes: tuple[int, ...] = param((1, 2), doc="Each at least one.", at_least=1)


@dataclasses.dataclass
class HoldsBounded(Config):
    inner: Bounded = param(Bounded(), doc="A section.")
    named: dict[str, Bounded] = param({"x": Bounded()}, doc="Named sections.")


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.steps=0", "'inner.steps' must be >= 1, got 0"),
        ("inner.steps=-1", "'inner.steps' must be >= 1, got -1"),
        ("inner.prob=1.0", "'inner.prob' must be >= 0 and < 1, got 1.0"),
        ("inner.kind=c", "'inner.kind' expects one of ['a', 'b'], got 'c'"),
        ("inner.sizes=(2, 0)", "'inner.sizes' must be >= 1, got (2, 0)"),
        ("named.x.steps=0", "'named.x.steps' must be >= 1, got 0"),
    ],
)
def test_set_refuses_values_outside_declared_bounds_and_choices(
    override: str, message: str
) -> None:
    config = HoldsBounded()
    with pytest.raises(ConfigError) as info:
        config.apply_overrides([override])
    assert str(info.value) == message
    assert config == HoldsBounded()  # nothing was set


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c.inner, "steps", 0), "'inner.steps' must be >= 1, got 0"),
        (lambda c: setattr(c.inner, "kind", "c"), "'inner.kind' must be one of ['a', 'b']"),
        (lambda c: setattr(c.named["x"], "prob", -0.5), "'named.x.prob' must be >= 0 and < 1"),
    ],
)
def test_validate_names_the_first_wrong_key_of_a_config_built_in_python(
    change: Any, message: str
) -> None:
    config = HoldsBounded()
    config.validate()
    change(config)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        config.validate()


def test_build_refuses_its_own_wrong_values() -> None:
    config = LabelSmoothedCrossEntropy.Config()
    field = next(f for f in dataclasses.fields(config) if "bounds" in f.metadata)
    bounds = field.metadata["bounds"]
    wrong = (bounds.at_least if bounds.at_least is not None else bounds.above) - 1
    setattr(config, field.name, wrong)
    with pytest.raises(ConfigError, match=f"'LabelSmoothedCrossEntropy.{field.name}' must be"):
        config.build()


def test_every_registered_experiment_is_valid() -> None:
    from seqlab.core.registry import list_experiments

    for name in list_experiments():
        get_experiment(name).validate()
