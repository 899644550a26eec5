"""Multi-task input: one input config per task, one shared tokenizer, and a training stream
that samples a task per step.

Datasets of one task are named ``<split>_<task>`` (``dev_en_es``), so the task-agnostic
runners evaluate and decode each task on its own and write ``eval_dev_en_es/`` and
``decode_dev_en_es/``. Only ``train`` (the training mixture) spans every task. Examples of all
tasks share one index space, task k owning ``[offset_k, offset_k + n_k)``; a batch holds one
task's examples and ``collate`` tags it with ``batch.task``.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.core.config import Config, ConfigError, Configurable, param
from seqlab.core.nested_map import NestedMap
from seqlab.data.batching import BatchStream
from seqlab.data.data_paths import check_dataset
from seqlab.data.mt_data import MTData, MTExamples, collate
from seqlab.data.sentencepiece_tokenizer import SentencePieceTokenizer, train_or_load_sentencepiece

# Task draws come in blocks, each a pure function of (seed, block), so the stream position is
# a draw count. The salt keeps them apart from the batch order, which seeds with (seed, epoch).
_DRAWS_PER_BLOCK = 1024
_TASK_DRAW_SALT = 0x7A5C


class UnknownTaskError(ValueError):
    """A task or task dataset name that the multi-task data does not have."""


def check_task_probabilities(
    probabilities: dict[str, float], task_names: Sequence[str], key: str
) -> list[float]:
    """Validates per-task sampling probabilities; returns them in ``task_names`` order.

    Raises:
      ConfigError: naming ``key`` when the tasks differ from ``task_names``, a probability is
        negative, or they do not sum to 1.
    """
    if not task_names:
        raise ConfigError(f"{key}: a multi-task config needs at least one task")
    if set(probabilities) != set(task_names):
        missing = sorted(set(task_names) - set(probabilities))
        extra = sorted(set(probabilities) - set(task_names))
        raise ConfigError(
            f"{key} must give one probability per task {list(task_names)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    values = [float(probabilities[name]) for name in task_names]
    for name, value in zip(task_names, values, strict=True):
        if not value >= 0.0:
            raise ConfigError(f"{key}.{name} = {value}: a probability must be >= 0")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ConfigError(f"{key} must sum to 1, got {sum(values):.6g} ({probabilities})")
    return values


def check_task_names(names: Sequence[str], key: str) -> None:
    """Task names become config keys and module names: they must be Python identifiers.

    Raises:
      ConfigError: naming ``key`` and the bad name.
    """
    for name in names:
        if not name.isidentifier():
            raise ConfigError(f"{key}.{name}: a task name must be an identifier like 'en_es'")


def task_seed(seed: int, task_index: int) -> int:
    """A seed for task ``task_index``'s batch order, derived from the experiment's ``seed``."""
    return int(np.random.SeedSequence([seed, task_index]).generate_state(1)[0])


@dataclasses.dataclass
class MultiTaskExamples:
    """The tokenized examples of one or more tasks in one index space (tasks in order)."""

    tasks: dict[str, MTExamples]

    def __post_init__(self) -> None:
        self.offsets: list[int] = []
        total = 0
        for examples in self.tasks.values():
            self.offsets.append(total)
            total += len(examples)
        self._total = total

    def __len__(self) -> int:
        return self._total

    def offset(self, task: str) -> int:
        return self.offsets[list(self.tasks).index(task)]

    def locate(self, indices: Sequence[int]) -> tuple[str, list[int]]:
        """Global indices of one batch -> (its task, indices into that task's examples).

        Raises:
          ValueError: if the indices are empty, out of range, or span more than one task.
        """
        if not indices:
            raise ValueError("an empty batch has no task")
        names = list(self.tasks)
        found = {bisect.bisect_right(self.offsets, i) - 1 for i in (min(indices), max(indices))}
        if len(found) != 1:
            spanned = [names[k] for k in sorted(found)]
            raise ValueError(f"a batch must hold one task's examples; it spans tasks {spanned}")
        k = found.pop()
        if min(indices) < 0 or max(indices) >= len(self):
            raise ValueError(f"example index out of range [0, {len(self)})")
        return names[k], [i - self.offsets[k] for i in indices]


class MultiTaskBatchStream:
    """An endless stream of one-task batches; the task of each step is drawn by probability.

    Each task has its own seeded :class:`BatchStream`. The task of draw n is a pure function
    of (seed, n), so the saved position is the draw count plus each task's stream position.
    """

    def __init__(
        self,
        streams: dict[str, BatchStream],
        offsets: Sequence[int],
        probabilities: Sequence[float],
        seed: int,
    ) -> None:
        self.streams = streams
        self.names = list(streams)
        self.offsets = list(offsets)
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self.probabilities /= self.probabilities.sum()
        self.seed = seed
        self.draws = 0
        self._block: tuple[int, np.ndarray] | None = None

    def task_at(self, draw: int) -> int:
        """Index of the task sampled at draw number ``draw``."""
        block = draw // _DRAWS_PER_BLOCK
        if self._block is None or self._block[0] != block:
            rng = np.random.default_rng([self.seed, _TASK_DRAW_SALT, block])
            choices = rng.choice(len(self.names), size=_DRAWS_PER_BLOCK, p=self.probabilities)
            self._block = (block, choices)
        return int(self._block[1][draw % _DRAWS_PER_BLOCK])

    @property
    def epoch(self) -> int:
        """Passes completed over the data of every task that is sampled at all."""
        sampled = [
            s.epoch for s, p in zip(self.streams.values(), self.probabilities, strict=True) if p
        ]
        return min(sampled)

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        k = self.task_at(self.draws)
        self.draws += 1
        batch = next(self.streams[self.names[k]])
        return [i + self.offsets[k] for i in batch]

    def state_dict(self) -> dict[str, Any]:
        return {
            "draws": self.draws,
            "tasks": {name: stream.state_dict() for name, stream in self.streams.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["tasks"]) != set(self.streams):
            raise ValueError(
                f"data stream state holds tasks {sorted(state['tasks'])}, "
                f"this run has {sorted(self.streams)}"
            )
        self.draws = int(state["draws"])
        for name, stream in self.streams.items():
            stream.load_state_dict(state["tasks"][name])


class MultiTaskData(Configurable):
    """The inputs of several named tasks (each an :class:`MTData`) with one joint tokenizer."""

    @dataclasses.dataclass
    class Config(Config):
        tasks: dict[str, MTData.Config] = param(
            {}, doc="Input of each task, by task name (the names of task.tasks)."
        )
        task_probabilities: dict[str, float] = param(
            {}, doc="Chance that a training step draws each task; equals task.task_probabilities."
        )

    def __init__(self, config: Config) -> None:
        self.config = config
        self.probabilities = check_task_probabilities(
            config.task_probabilities, list(config.tasks), "data.task_probabilities"
        )
        names = list(config.tasks)
        check_task_names(names, "data.tasks")
        first = names[0]
        for name in names[1:]:
            difference = config.tasks[name].tokenizer.diff(config.tasks[first].tokenizer)
            if difference:
                key, _, change = difference.splitlines()[0].partition(": ")
                raise ConfigError(
                    f"tasks share one tokenizer, but data.tasks.{name}.tokenizer.{key} differs "
                    f"from data.tasks.{first}.tokenizer.{key} ({change})"
                )
        self.tasks: dict[str, MTData] = {name: c.build() for name, c in config.tasks.items()}
        self.tokenizer: SentencePieceTokenizer | None = None
        self.tokenizer_path: Path | None = None

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def check_task(self, task: str) -> None:
        """Raises UnknownTaskError, listing the tasks, unless ``task`` is one of them."""
        if task not in self.tasks:
            raise UnknownTaskError(f"unknown task '{task}'; this run's tasks: {self.task_names}")

    def dataset_name(self, split: str, task: str) -> str:
        """The name of ``task``'s part of ``split`` (e.g. ``dev_en_es``)."""
        self.check_task(task)
        return f"{split}_{task}"

    # ---- tokenizer ------------------------------------------------------------------------
    def load_tokenizer(self, model_path: Path | None = None) -> SentencePieceTokenizer:
        """Loads ``model_path`` if given, else trains (or reuses) one joint model on the
        training text of every task (a corpus used by several tasks counts once)."""
        first = next(iter(self.tasks.values()))
        tokenizer_config = first.config.tokenizer
        sources = {(d.paths()["train"], d.config.train_limit) for d in self.tasks.values()}
        if model_path is not None and model_path.exists():
            tokenizer = SentencePieceTokenizer.load(tokenizer_config, model_path)
        elif len(sources) == 1:  # e.g. both directions of one corpus: its own tokenizer
            tokenizer = first.load_tokenizer()
            assert first.tokenizer_path is not None
            model_path = first.tokenizer_path
        else:
            texts: list[str] = []
            seen: set[tuple[Path, int]] = set()
            for data in self.tasks.values():
                source = (data.paths()["train"], data.config.train_limit)
                if source not in seen:
                    seen.add(source)
                    texts += data.tokenizer_texts()
            tokenizer, model_path = train_or_load_sentencepiece(
                tokenizer_config, texts, first.cache_dir / "tokenizers"
            )
        for data in self.tasks.values():
            data.tokenizer, data.tokenizer_path = tokenizer, model_path
        self.tokenizer, self.tokenizer_path = tokenizer, model_path
        return tokenizer

    # ---- examples and batches -------------------------------------------------------------
    def examples(self, dataset: str) -> MultiTaskExamples:
        """``train`` (every task, for training) or one task's split, e.g. ``dev_en_es``.

        Raises:
          UnknownTaskError: for another dataset name, listing the valid ones.
        """
        if dataset == "train":
            return MultiTaskExamples({n: d.examples("train") for n, d in self.tasks.items()})
        split, _, task = dataset.partition("_")
        if task in self.tasks:
            return MultiTaskExamples({task: self.tasks[task].examples(split)})
        valid = [f"{s}_{t}" for s in ("dev", "test", "train") for t in self.tasks]
        raise UnknownTaskError(
            f"multi-task data has no dataset '{dataset}': name one task's split, one of "
            f"{', '.join(valid)} (on the command line: --dataset {split} --task NAME)"
        )

    def task_examples(self, task: str, examples: MTExamples) -> MultiTaskExamples:
        """Wraps examples of ``task`` (e.g. raw inputs to translate) for ``collate``."""
        self.check_task(task)
        return MultiTaskExamples({task: examples})

    def train_stream(self, examples: MultiTaskExamples, seed: int) -> MultiTaskBatchStream:
        streams = {
            name: self.tasks[name].train_stream(task_examples, task_seed(seed, k))
            for k, (name, task_examples) in enumerate(examples.tasks.items())
        }
        return MultiTaskBatchStream(streams, examples.offsets, self.probabilities, seed)

    def eval_batches(self, examples: MultiTaskExamples) -> list[list[int]]:
        """Each task's deterministic eval batches, in global indices."""
        batches: list[list[int]] = []
        for offset, (name, task_examples) in zip(
            examples.offsets, examples.tasks.items(), strict=True
        ):
            for batch in self.tasks[name].eval_batches(task_examples):
                batches.append([i + offset for i in batch])
        return batches

    def collate(self, examples: MultiTaskExamples, indices: list[int]) -> NestedMap:
        """Pads one task's examples into a batch (see ``mt_data.collate``) with ``task`` set."""
        task, local = examples.locate(indices)
        batch = collate(examples.tasks[task], local)
        batch.task = task
        return batch


def task_datasets(data: Any, split: str, task: str = "") -> list[str]:
    """The datasets a runner processes for ``split``: ``split`` itself for single-task data;
    for multi-task data, ``task``'s part, or every task's part when ``task`` is empty.

    Raises:
      UnknownTaskError: for a ``task`` the data does not have (or single-task data).
    """
    if not isinstance(data, MultiTaskData):
        if task:
            raise UnknownTaskError(f"--task {task}: this run trains a single task; omit --task")
        if hasattr(data, "paths"):  # a user's data class may name its datasets otherwise
            check_dataset(data.paths(), split)
        return [split]
    names = [task] if task else data.task_names
    return [data.dataset_name(split, name) for name in names]
