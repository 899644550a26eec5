"""Tests for seqlab.data.multi_task_data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from seqlab.core.config import ConfigError
from seqlab.data.batching import BatchStream
from seqlab.data.mt_data import MTData, MTExamples
from seqlab.data.multi_task_data import (
    MultiTaskBatchStream,
    MultiTaskData,
    MultiTaskExamples,
    UnknownTaskError,
    task_datasets,
)
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer

TAGS = ("<2es>", "<2en>")

# ---- the task-sampling stream ---------------------------------------------------------------


def _stream(probabilities: list[float], seed: int = 7) -> MultiTaskBatchStream:
    """A stream over three tasks of 40, 25 and 60 examples."""
    sizes = [40, 25, 60]
    rng = np.random.default_rng(0)
    streams = {
        f"task{k}": BatchStream(rng.integers(3, 30, size=n).tolist(), 64, seed + k)
        for k, n in enumerate(sizes)
    }
    offsets = [0, 40, 65]
    return MultiTaskBatchStream(streams, offsets, probabilities, seed)


def _task_of(indices: list[int]) -> int:
    return 0 if indices[0] < 40 else 1 if indices[0] < 65 else 2


def test_task_frequencies_match_probabilities() -> None:
    probabilities = [0.2, 0.5, 0.3]
    stream = _stream(probabilities)
    draws = 6000
    counts = np.bincount([_task_of(b) for b in itertools.islice(stream, draws)], minlength=3)
    expected = draws * np.asarray(probabilities)
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    # 2 degrees of freedom: P(chi2 > 13.8) = 0.001.
    assert chi_square < 13.8, (counts, expected)
    # And the test notices a wrong distribution: the same counts against 1/3 each fail.
    uniform = np.full(3, draws / 3)
    assert float(((counts - uniform) ** 2 / uniform).sum()) > 13.8


def test_every_batch_is_one_task_and_a_zero_probability_task_never_comes() -> None:
    stream = _stream([0.5, 0.0, 0.5])
    for indices in itertools.islice(stream, 300):
        assert len({_task_of([i]) for i in indices}) == 1
        assert _task_of(indices) != 1
    assert stream.epoch >= 1  # the two sampled tasks went round; the unsampled one does not count


def test_stream_is_a_function_of_the_seed() -> None:
    a = list(itertools.islice(_stream([0.2, 0.5, 0.3], seed=1), 200))
    b = list(itertools.islice(_stream([0.2, 0.5, 0.3], seed=1), 200))
    c = list(itertools.islice(_stream([0.2, 0.5, 0.3], seed=2), 200))
    assert a == b
    assert a != c


def test_saved_position_resumes_exactly_across_draw_blocks() -> None:
    stream = _stream([0.2, 0.5, 0.3])
    list(itertools.islice(stream, 1000))
    state = stream.state_dict()
    expected = list(itertools.islice(stream, 100))  # crosses the 1024-draw block boundary
    resumed = _stream([0.2, 0.5, 0.3])
    resumed.load_state_dict(state)
    assert list(itertools.islice(resumed, 100)) == expected
    assert state["draws"] == 1000 and set(state["tasks"]) == {"task0", "task1", "task2"}


def test_state_of_other_tasks_is_refused() -> None:
    with pytest.raises(ValueError, match="holds tasks"):
        _stream([0.2, 0.5, 0.3]).load_state_dict({"draws": 0, "tasks": {"x": {}}})


# ---- examples and collate ----------------------------------------------------------------------


def _examples(n: int, first_id: int) -> MTExamples:
    return MTExamples(
        source_ids=[[first_id + i, 3] for i in range(n)],
        target_ids=[[first_id + i] for i in range(n)],
        source_text=[f"s{first_id + i}" for i in range(n)],
        target_text=[f"t{first_id + i}" for i in range(n)],
    )


def test_examples_share_one_index_space() -> None:
    examples = MultiTaskExamples({"a": _examples(3, 10), "b": _examples(2, 20)})
    assert len(examples) == 5
    assert examples.offsets == [0, 3] and examples.offset("b") == 3
    assert examples.locate([4, 3]) == ("b", [1, 0])
    assert examples.locate([2]) == ("a", [2])
    with pytest.raises(ValueError, match=r"spans tasks \['a', 'b'\]"):
        examples.locate([2, 3])
    with pytest.raises(ValueError, match="out of range"):
        examples.locate([5])


# ---- MultiTaskData on files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sentence_pairs) -> dict[str, Path]:
    """train/dev/test TSV files of 200/20/10 generated pairs, and a cache directory."""
    root = tmp_path_factory.mktemp("multi_task_data")
    paths = {"cache": root / "cache"}
    for seed, (split, count) in enumerate((("train", 200), ("dev", 20), ("test", 10))):
        paths[split] = root / f"{split}.tsv"
        lines = (f"{s}\t{t}\n" for s, t in sentence_pairs(count, seed + 1))
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths


def _task_data(files: dict[str, Path], **overrides: object) -> MTData.Config:
    """One direction over ``files``, with the tag pieces of both directions in its vocabulary."""
    paths = {f"{split}_path": str(files[split]) for split in ("train", "dev", "test")}
    tokenizer = SentencePieceTokenizer.Config(vocab_size=64, user_defined_symbols=TAGS)
    return MTData.Config(
        corpus="", cache_dir=str(files["cache"]), tokenizer=tokenizer, max_tokens=64, **paths
    ).apply_overrides([f"{k}={v}" for k, v in overrides.items()])


def _config(files: dict[str, Path], en_es: float = 0.5) -> MultiTaskData.Config:
    return MultiTaskData.Config(
        tasks={"en_es": _task_data(files), "es_en": _task_data(files, reverse=True)},
        task_probabilities={"en_es": en_es, "es_en": 1.0 - en_es},
    )


def test_both_directions_share_one_tokenizer_and_split(files: dict[str, Path]) -> None:
    data = _config(files).build()
    tokenizer = data.load_tokenizer()
    assert tokenizer.processor.id_to_piece(4) == "<2es>"
    assert tokenizer.processor.id_to_piece(5) == "<2en>"
    # The same model a single-direction MTData trains: the corpus counts once.
    single = _task_data(files).build()
    single.load_tokenizer()
    assert data.tokenizer_path == single.tokenizer_path
    assert all(d.tokenizer is tokenizer for d in data.tasks.values())

    train = data.examples("train")
    assert list(train.tasks) == ["en_es", "es_en"] and len(train) == 400
    en_es, es_en = train.tasks["en_es"], train.tasks["es_en"]
    # Both directions read one shard set of the corpus, sides swapped.
    assert es_en.shards.directory == en_es.shards.directory
    assert [s[:-1] for s in es_en.source_ids] == list(en_es.target_ids)
    assert list(es_en.target_ids) == [s[:-1] for s in en_es.source_ids]

    stream = data.train_stream(train, seed=3)
    seen = set()
    for indices in itertools.islice(stream, 30):
        batch = data.collate(train, indices)
        task_examples = train.tasks[batch.task]
        assert batch.src_text == [task_examples.source_text[i] for i in batch.indices]
        seen.add(batch.task)
    assert seen == {"en_es", "es_en"}


def test_task_datasets_are_named_split_underscore_task(files: dict[str, Path]) -> None:
    data = _config(files).build()
    data.load_tokenizer()
    dev = data.examples("dev_es_en")
    assert list(dev.tasks) == ["es_en"] and len(dev) == 20
    batches = data.eval_batches(dev)
    assert sorted(i for b in batches for i in b) == list(range(20))
    assert {data.collate(dev, b).task for b in batches} == {"es_en"}
    assert len(data.examples("test_en_es")) == 10
    with pytest.raises(UnknownTaskError, match="dev_en_es, dev_es_en") as info:
        data.examples("dev")
    assert "--task NAME" in str(info.value)

    assert task_datasets(data, "dev") == ["dev_en_es", "dev_es_en"]
    assert task_datasets(data, "test", "es_en") == ["test_es_en"]
    with pytest.raises(UnknownTaskError, match=r"unknown task 'fr'; this run's tasks"):
        task_datasets(data, "dev", "fr")
    single = _task_data(files).build()
    assert task_datasets(single, "dev") == ["dev"]
    with pytest.raises(UnknownTaskError, match="single task"):
        task_datasets(single, "dev", "en_es")


def test_task_examples_wrap_raw_inputs_for_collate(files: dict[str, Path]) -> None:
    data = _config(files).build()
    wrapped = data.task_examples("es_en", _examples(2, 10))
    batch = data.collate(wrapped, [0, 1])
    assert batch.task == "es_en" and batch.src_text == ["s10", "s11"]
    with pytest.raises(UnknownTaskError):
        data.task_examples("fr_en", _examples(2, 10))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.task_probabilities.update(en_es=0.7), "data.task_probabilities must sum to 1"),
        (
            lambda c: c.task_probabilities.pop("es_en"),
            r"one probability per task \['en_es', 'es_en'\]; missing \['es_en'\]",
        ),
        (
            lambda c: c.task_probabilities.update(en_es=-0.5, es_en=1.5),
            r"data.task_probabilities.en_es = -0.5: a probability must be >= 0",
        ),
        (
            lambda c: setattr(c.tasks["es_en"].tokenizer, "vocab_size", 99),
            r"data.tasks.es_en.tokenizer.vocab_size differs from "
            r"data.tasks.en_es.tokenizer.vocab_size \(64 -> 99\)",
        ),
        (lambda c: c.tasks.clear() or c.task_probabilities.clear(), "at least one task"),
    ],
)
def test_bad_configs_name_the_key(files: dict[str, Path], change, message: str) -> None:
    config = _config(files)
    change(config)
    with pytest.raises(ConfigError, match=message):
        config.build()


def test_task_names_must_be_identifiers(files: dict[str, Path]) -> None:
    config = MultiTaskData.Config(
        tasks={"en-es": _task_data(files)}, task_probabilities={"en-es": 1.0}
    )
    with pytest.raises(ConfigError, match="data.tasks.en-es: a task name must be an identifier"):
        config.build()


def test_config_prints_and_overrides_per_task(files: dict[str, Path]) -> None:
    config = _config(files)
    text = config.to_text()
    assert "tasks.es_en.reverse = True\n" in text
    assert "task_probabilities.en_es = 0.5\n" in text
    config.set("tasks.es_en.max_tokens", "128")
    config.set("task_probabilities.en_es", "0.25")
    assert config.tasks["es_en"].max_tokens == 128 and config.tasks["en_es"].max_tokens == 64
    assert config.task_probabilities["en_es"] == 0.25
    with pytest.raises(ConfigError, match="unknown key 'tasks.fr_en.max_tokens'"):
        config.set("tasks.fr_en.max_tokens", "1")
