"""Weighted averaging of (value, weight) metrics across batches."""

from __future__ import annotations

from seqlab.models.base import Metrics


class MetricsAccumulator:
    """Sums value * weight and weight per metric name."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._weights: dict[str, float] = {}

    def add(self, metrics: Metrics) -> None:
        for name, (value, weight) in metrics.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value) * float(weight)
            self._weights[name] = self._weights.get(name, 0.0) + float(weight)

    def means(self) -> dict[str, float]:
        return {k: self._sums[k] / max(self._weights[k], 1e-12) for k in self._sums}
