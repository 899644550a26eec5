"""The Task contract: everything the runners need from a model, and nothing more."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from seqlab.core.layer import Layer
from seqlab.core.nested_map import NestedMap

# A metric is (value, weight): runners average values weighted by weights across batches,
# except counts (``num_*``, e.g. ``num_target_tokens``: (count, 1.0)), which they total.
Metrics = dict[str, tuple[float, float]]

COUNT_PREFIX = "num_"


def is_count(name: str) -> bool:
    """Whether metric ``name`` (or ``<task>/name``) is a count, which runners sum over batches
    and processes."""
    return name.rpartition("/")[2].startswith(COUNT_PREFIX)


class Task(Layer):
    """A model plus its loss, decoding and metrics.

    Runners call ``compute_predictions`` and ``compute_loss`` to train and evaluate, and
    ``decode``, ``process_decode_out`` and ``decode_metrics`` to decode and score. A new task
    implements these five methods and needs no runner change.
    """

    @dataclasses.dataclass
    class Config(Layer.Config):
        """No fields of its own."""

    def bind_data(self, data: Any) -> None:
        """Gives the task the input pipeline (e.g. its tokenizer for detokenizing)."""
        self.data = data

    def compute_predictions(self, batch: NestedMap) -> NestedMap:
        raise NotImplementedError

    def compute_loss(
        self, batch: NestedMap, predictions: NestedMap
    ) -> tuple[torch.Tensor, Metrics]:
        """Returns the scalar loss to minimize and weighted metrics."""
        raise NotImplementedError

    def finalize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics of a whole dataset from the weighted means of ``compute_loss``'s (and the
        totals of its counts), e.g. a perplexity, the exponential of the mean
        log-perplexity; by default the means."""
        return means

    def decode(self, batch: NestedMap) -> NestedMap:
        raise NotImplementedError

    def process_decode_out(self, batch: NestedMap, decode_out: NestedMap) -> list[dict[str, Any]]:
        """One JSON-friendly dict per example (e.g. source, hypothesis, reference)."""
        raise NotImplementedError

    def decode_metrics(self, results: list[dict[str, Any]]) -> dict[str, float | str]:
        """Corpus-level metrics over all processed decode results."""
        raise NotImplementedError
