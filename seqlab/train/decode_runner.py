"""The decoder job: decode a dataset, write hypotheses beside the score."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seqlab.layers.packed_linear import pack_linear_layers
from seqlab.train.best_scores import update_best_scores
from seqlab.train.run_context import RunContext


@torch.no_grad()
def decode_dataset(
    context: RunContext, dataset: str, limit: int = 0, show_progress: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Decodes every example of ``dataset`` (or the first ``limit``) in corpus order.

    Decodes an inference copy of the task whose float ``nn.Linear`` layers are prepacked
    for oneDNN (``pack_linear_layers``: the same outputs to float32 rounding, faster at
    decoding shapes); ``context.task`` itself is not changed.

    Returns:
      (results in the dataset's order, corpus-level metrics from the task).
    """
    task, data = pack_linear_layers(context.task), context.data
    examples = data.examples(dataset)
    batches = data.eval_batches(examples)
    if limit > 0:
        batches = [[i for i in b if i < limit] for b in batches]
        batches = [b for b in batches if b]
    results: dict[int, dict[str, Any]] = {}
    total = sum(len(b) for b in batches)
    start = time.time()
    with tqdm(total=total, desc=f"decode {dataset}", unit="sent", disable=not show_progress) as bar:
        for indices in batches:
            batch = data.collate(examples, indices).to(context.device)
            out = task.decode(batch)
            for index, result in zip(indices, task.process_decode_out(batch, out), strict=True):
                results[index] = result
            bar.update(len(indices))
    ordered = [results[i] for i in sorted(results)]
    metrics = dict(task.decode_metrics(ordered))
    metrics["sentences_per_second"] = len(ordered) / max(time.time() - start, 1e-9)
    return ordered, metrics


def write_decode_outputs(
    out_dir: Path, step: int, results: list[dict[str, Any]], metrics: dict[str, Any]
) -> tuple[Path, Path]:
    """Writes ``hyps-<step>.txt`` (one hypothesis per line), ``decodes-<step>.jsonl`` and
    ``score-<step>.json`` into ``out_dir``, and updates its ``best.json``; returns (hyps path,
    score path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    hyps = out_dir / f"hyps-{step:08d}.txt"
    score = out_dir / f"score-{step:08d}.json"
    files = {
        hyps: "".join(r["hypothesis"] + "\n" for r in results),
        out_dir / f"decodes-{step:08d}.jsonl": "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in results
        ),
        score: json.dumps({"step": step, **metrics}, indent=1, ensure_ascii=False) + "\n",
    }
    for path, text in files.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    update_best_scores(out_dir, "score-*.json")
    return hyps, score
