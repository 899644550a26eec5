"""Reduction of (value, weight) metrics across batches: weighted means, and totals of counts."""

from __future__ import annotations

from seqlab.models.base import Metrics, is_count


def reduce_metric(name: str, weighted_sum: float, total_weight: float) -> float:
    """A metric over many batches from the sums of value * weight and of weight: a count's
    total (the sum itself), else the weighted mean (0.0 without weight)."""
    if is_count(name):
        return weighted_sum
    return weighted_sum / total_weight if total_weight > 0 else 0.0


class MetricsAccumulator:
    """Sums value * weight and weight per metric name."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._weights: dict[str, float] = {}

    def add(self, metrics: Metrics) -> None:
        for name, (value, weight) in metrics.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value) * float(weight)
            self._weights[name] = self._weights.get(name, 0.0) + float(weight)

    def results(self) -> dict[str, float]:
        """Each metric reduced over the batches added (:func:`reduce_metric`)."""
        return {k: reduce_metric(k, self._sums[k], self._weights[k]) for k in self._sums}
