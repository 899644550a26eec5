"""The best score of each metric of an eval or decode job: ``<logdir>/<job>/best.json``.

Rewritten from the job's per-step result files (``score-<step>.json`` of a decode job,
``metrics-<step>.json`` of an eval job) each time one is written, by the trainer's periodic
eval and decode and by ``seqlab eval``/``seqlab decode``; a step scored again counts with its
newest result. Only metrics whose direction is known (``METRIC_MODES``) have a best.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from seqlab.core.atomic_files import write_atomic

BEST_FILE = "best.json"

# Whether a larger (max) or smaller (min) value of a metric is better.
METRIC_MODES = {
    "bleu": "max",
    "chrf": "max",
    "loss": "min",
    "log_pplx": "min",
    "pplx": "min",
    "log_pplx_per_word": "min",
    "pplx_per_word": "min",
    "ctc_loss_per_utterance": "min",
    "wer": "min",
    "cer": "min",
}
MODES = ("min", "max")


def is_better(value: float, than: float, mode: str) -> bool:
    """Whether ``value`` is strictly better than ``than`` under ``mode`` (min or max)."""
    return value < than if mode == "min" else value > than


def score_value(value: Any) -> float | None:
    """A result's value as a score, or None for a text, count-free or non-finite entry."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def update_best_scores(job_dir: Path, pattern: str) -> dict[str, dict[str, Any]]:
    """Rewrites ``job_dir/best.json`` from the result files ``pattern`` matches there.

    Returns:
      Metric -> {"step", "value", "mode"} of its best result (earliest step on a tie).
    """
    best: dict[str, dict[str, Any]] = {}
    for path in sorted(job_dir.glob(pattern)):
        try:
            results = json.loads(path.read_text())
            step = int(results["step"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not a result file
        for name, mode in METRIC_MODES.items():
            value = score_value(results.get(name))
            if value is None:
                continue
            current = best.get(name)
            if current is None or is_better(value, current["value"], mode):
                best[name] = {"step": step, "value": value, "mode": mode}
            elif value == current["value"] and step < current["step"]:
                current["step"] = step
    write_atomic(job_dir / BEST_FILE, (json.dumps(best, indent=1, sort_keys=True) + "\n").encode())
    return best
