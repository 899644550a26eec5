"""A multi-task model: several named sub-tasks, some of whose modules are one shared object.

Each training batch comes from one task (``batch.task``, set by MultiTaskData, which samples
the task of each step by ``task_probabilities``) and is routed to that sub-task. Modules named
in ``shared`` are built once, from the first task's config, and are literally the same object
in every sub-task, so their parameters exist (and are counted and updated) once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from seqlab.core.config import Config, ConfigError, param
from seqlab.core.nested_map import NestedMap
from seqlab.data.multi_task_data import (
    MultiTaskData,
    check_task_names,
    check_task_probabilities,
)
from seqlab.models.base import Metrics, Task


class MultiTaskModel(Task):
    """Routes each batch to the sub-task named by ``batch.task``; ties ``shared`` modules."""

    @dataclasses.dataclass
    class Config(Task.Config):
        tasks: dict[str, Task.Config] = param(
            {}, doc="Sub-task configs by task name (the names of data.tasks)."
        )
        task_probabilities: dict[str, float] = param(
            {}, doc="Chance that a training step trains each task; equals data.task_probabilities."
        )
        shared: tuple[str, ...] = param(
            (), doc="Module paths tied across all tasks (one object), e.g. encoder, embedding."
        )

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        check_task_probabilities(
            config.task_probabilities, list(config.tasks), "task.task_probabilities"
        )
        check_task_names(list(config.tasks), "task.tasks")
        self.tasks = nn.ModuleDict({name: c.build() for name, c in config.tasks.items()})
        # build() hands each sub-task a copy; point at those, so that a change through this
        # config (`seqlab decode --set task.tasks.en_es.beam_search.beam_size=2`) takes effect.
        for name, task in self.tasks.items():
            config.tasks[name] = task.config
        for path in config.shared:
            self._tie(path)

    def _tie(self, path: str) -> None:
        """Makes module ``path`` of every task the first task's object.

        Raises:
          ConfigError: if a task lacks ``path`` or configures it differently from the first.
        """
        names = list(self.tasks)
        first = names[0]
        first_config = _config_at(self.config.tasks[first], path, first)
        shared_module = self.tasks[first].get_submodule(path)
        for name in names[1:]:
            config = _config_at(self.config.tasks[name], path, name)
            if config != first_config:
                difference = (
                    config.diff(first_config).splitlines()[0]
                    if isinstance(config, Config)
                    else f"{first_config!r} -> {config!r}"
                )
                raise ConfigError(
                    f"task.shared ties '{path}', but task.tasks.{name}.{path} differs from "
                    f"task.tasks.{first}.{path} ({difference}); shared modules need one config"
                )
            parent_path, _, attribute = path.rpartition(".")
            setattr(self.tasks[name].get_submodule(parent_path), attribute, shared_module)

    def bind_data(self, data: Any) -> None:
        """Binds each sub-task to its task's input (which holds the joint tokenizer).

        Raises:
          ConfigError: if the data is not a MultiTaskData of the same tasks and probabilities.
        """
        super().bind_data(data)
        if not isinstance(data, MultiTaskData):
            raise ConfigError(
                f"a MultiTaskModel needs data.cls = 'MultiTaskData', got {type(data).__name__}"
            )
        if data.task_names != list(self.tasks):
            raise ConfigError(
                f"task.tasks {list(self.tasks)} and data.tasks {data.task_names} must name the "
                "same tasks in the same order"
            )
        if data.config.task_probabilities != self.config.task_probabilities:
            raise ConfigError(
                f"task.task_probabilities {self.config.task_probabilities} differs from "
                f"data.task_probabilities {data.config.task_probabilities}; set both"
            )
        for name, task in self.tasks.items():
            task.bind_data(data.tasks[name])

    def _task_of(self, batch: NestedMap) -> tuple[str, Task]:
        if "task" not in batch:
            raise ValueError("batch has no 'task': a MultiTaskModel reads batches of MultiTaskData")
        if batch.task not in self.tasks:
            raise ValueError(f"batch.task '{batch.task}' is not one of {list(self.tasks)}")
        return batch.task, self.tasks[batch.task]

    # ---- the Task contract, routed by batch.task -----------------------------------------------
    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        return self._task_of(batch)[1].compute_predictions(batch)

    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        """The sub-task's loss and metrics, plus the metrics again as ``<task>/<name>``."""
        name, task = self._task_of(batch)
        loss, metrics = task.compute_loss(batch, predictions)
        return loss, {**metrics, **{f"{name}/{k}": v for k, v in metrics.items()}}

    def decode(self, batch: NestedMap) -> NestedMap:
        return self._task_of(batch)[1].decode(batch)

    def process_decode_out(self, batch: NestedMap, decode_out: NestedMap) -> list[dict[str, Any]]:
        """The sub-task's results, each with its ``task`` name."""
        name, task = self._task_of(batch)
        return [{"task": name, **r} for r in task.process_decode_out(batch, decode_out)]

    def decode_metrics(self, results: list[dict[str, Any]]) -> dict[str, float | str]:
        """The metrics of the one task the results come from."""
        names = {r["task"] for r in results}
        if len(names) > 1:
            raise ValueError(f"decode results mix tasks {sorted(names)}; score each on its own")
        name = names.pop() if names else next(iter(self.tasks))
        return self.tasks[name].decode_metrics(results)

    @torch.no_grad()
    def alignment(self, batch: NestedMap) -> torch.Tensor:
        """The sub-task's cross-attention image of the first example, [T, S]."""
        task = self._task_of(batch)[1]
        if not hasattr(task, "alignment"):
            raise NotImplementedError(f"{type(task).__name__} has no alignment")
        return task.alignment(batch)


def _config_at(config: Config, path: str, task: str) -> Any:
    """The config of module ``path`` in a sub-task config (``decoder.layers`` and so on)."""
    node: Any = config
    for part in path.split("."):
        if isinstance(node, tuple | list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, Config) and hasattr(node, part):
            node = getattr(node, part)
        else:
            raise ConfigError(
                f"task.shared names '{path}', but task.tasks.{task} has no config '{path}'"
            )
    return node
