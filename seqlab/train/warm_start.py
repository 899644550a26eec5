"""Warm start: a new run's weights initialized from another run's checkpoint.

Lingvo's ``init_from_checkpoint_rules``, in the simple form research mostly needs: every
parameter of the new model comes from the checkpoint (same names and shapes), and buffers the
checkpoint lacks keep their fresh values. That covers fine-tuning a trained model with
quantization-aware training (``--set quant.mode=qat``: the fake-quantized layers add range
buffers) or with another schedule or dataset. The optimizer, data position and step start
afresh.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seqlab.train.checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    load_checkpoint,
    load_latest_checkpoint,
)
from seqlab.train.checkpoint_fit import check_model_fit


def warm_start(model: torch.nn.Module, source: str, tokenizer: Path | None = None) -> str:
    """Loads the weights of ``source`` into ``model``; returns a one-line summary.

    Args:
      model: the freshly built model of the new run.
      source: a checkpoint file or ``.dcp`` directory, or a logdir (its newest checkpoint).
      tokenizer: the new run's tokenizer model file; when the source's logdir has one too,
        the two must be the same file (embedding rows mean nothing under another vocabulary).

    Raises:
      CheckpointError: ``source`` holds no readable checkpoint.
      IncompatibleCheckpointError: a parameter is missing or has another shape, or the source
        run used another tokenizer; the model is unchanged.
    """
    path = Path(source)
    source_logdir = path if (path / "checkpoints").is_dir() else path.parent.parent
    if tokenizer is not None and tokenizer.exists():
        theirs = source_logdir / tokenizer.name
        if theirs.exists() and theirs.read_bytes() != tokenizer.read_bytes():
            raise IncompatibleCheckpointError(
                f"trainer.init_from_checkpoint: {theirs} differs from this run's {tokenizer}: "
                f"the checkpoint's embeddings belong to another vocabulary (train this run "
                f"with the source's data.tokenizer settings)"
            )
    if (path / "checkpoints").is_dir():
        found = load_latest_checkpoint(path / "checkpoints")
        if found is None:
            raise CheckpointError(f"trainer.init_from_checkpoint: no checkpoint in {path}")
        path, payload = found
    elif path.exists():
        payload = load_checkpoint(path)
    else:
        raise CheckpointError(f"trainer.init_from_checkpoint: {path} does not exist")
    weights = payload["model"]
    own = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    # Parameters must all be there; buffers are taken when the checkpoint has them.
    expected = {n: t for n, t in own.items() if n in parameters or n in weights}
    check_model_fit(model, weights, path, payload.get("config"), expected=expected)
    model.load_state_dict({**own, **weights})
    fresh = sorted(set(own) - set(weights))
    kept = f"; {len(fresh)} buffers the checkpoint lacks start fresh" if fresh else ""
    return f"initialized {len(weights)} tensors from {path} (step {payload.get('step')}){kept}"
