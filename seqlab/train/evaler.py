"""The evaler: teacher-forced loss and metrics of a checkpoint on a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from seqlab.core.atomic_files import write_atomic
from seqlab.train.best_scores import update_best_scores
from seqlab.train.metrics_accumulator import MetricsAccumulator
from seqlab.train.run_context import RunContext


@torch.no_grad()
def evaluate(context: RunContext, dataset: str, show_progress: bool = True) -> dict[str, float]:
    """The task's loss metrics over every batch of ``dataset``.

    Returns:
      Metric name -> weighted mean (e.g. ``loss``, ``log_pplx``), or total for a count
      (``num_target_tokens``).
    """
    task, data = context.task, context.data
    examples = data.examples(dataset)
    was_training = task.training
    task.eval()
    accumulator = MetricsAccumulator()
    for indices in tqdm(
        data.eval_batches(examples), desc=f"eval {dataset}", leave=False, disable=not show_progress
    ):
        batch = data.collate(examples, indices).to(context.device)
        predictions = task.compute_predictions(batch)
        _, metrics = task.compute_loss(batch, predictions)
        accumulator.add(metrics)
    task.train(was_training)
    return task.finalize_metrics(accumulator.results())


def write_eval_metrics(job_dir: Path, step: int, metrics: dict[str, float]) -> Path:
    """Writes ``metrics-<step>.json`` into ``job_dir`` (e.g. ``eval_dev/``) and updates its
    ``best.json``; returns the metrics file."""
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / f"metrics-{step:08d}.json"
    write_atomic(path, (json.dumps({"step": step, **metrics}, indent=1) + "\n").encode())
    update_best_scores(job_dir, "metrics-*.json")
    return path
