"""Whether a checkpoint's weights fit a model, checked before anything is loaded.

``torch.nn.Module.load_state_dict`` reports a checkpoint of another model as a long
PyTorch traceback listing every key; here the first mismatching parameter (with its two
shapes) is named in one line with the checkpoint file, and the model is left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from seqlab.train.checkpoint import IncompatibleCheckpointError


def _shape(tensor: torch.Tensor) -> str:
    return "[" + ", ".join(str(n) for n in tensor.shape) + "]"


def first_mismatch(expected: dict[str, torch.Tensor], found: Any) -> str | None:
    """None if ``found`` has exactly the keys and shapes of ``expected``, else what differs.

    The problem reported is the first in the model's parameter order (a missing parameter or
    a shape), then the first extra key of ``found``; the count of all problems follows.
    """
    if not isinstance(found, dict):
        return f"its model weights are a {type(found).__name__}, not a dict of tensors"
    problems = []
    for name, tensor in expected.items():
        if name not in found:
            problems.append(f"parameter '{name}' of this model is missing from the checkpoint")
        elif not isinstance(found[name], torch.Tensor):
            problems.append(f"parameter '{name}' is a {type(found[name]).__name__}, not a tensor")
        elif found[name].shape != tensor.shape:
            problems.append(
                f"parameter '{name}' has shape {_shape(found[name])} in the checkpoint and "
                f"{_shape(tensor)} in this model"
            )
    problems += [
        f"the checkpoint has parameter '{name}' that this model lacks"
        for name in found
        if name not in expected
    ]
    if not problems:
        return None
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more mismatch{'es' if more > 1 else ''})" if more else "")


def trained_model_class(checkpoint_config: Any) -> str:
    """The task class named in a checkpoint's config dict ("" if it names none)."""
    try:
        name = checkpoint_config["task"]["__class__"]
    except (KeyError, TypeError):
        return ""
    if not isinstance(name, str):
        return ""
    return name.rpartition(":")[2].removesuffix(".Config")


def load_model_state(
    model: torch.nn.Module, state: Any, path: Path, checkpoint_config: Any = None
) -> None:
    """Loads the weights ``state`` of the checkpoint at ``path`` into ``model``.

    Args:
      model: the model built from this run's config.
      state: parameter name -> tensor, as read from the checkpoint.
      path: the checkpoint file (named in errors).
      checkpoint_config: the config dict stored in the checkpoint, if any; its task class
        is named in the error when it differs from ``model``'s.

    Raises:
      IncompatibleCheckpointError: a missing or extra parameter or a shape mismatch; the
        model is unchanged.
    """
    check_model_fit(model, state, path, checkpoint_config)
    model.load_state_dict(state)


def check_model_fit(
    model: torch.nn.Module,
    state: Any,
    path: Path,
    checkpoint_config: Any = None,
    expected: dict[str, torch.Tensor] | None = None,
) -> None:
    """Raises IncompatibleCheckpointError unless ``state`` has ``model``'s names and shapes.

    ``state`` maps names to anything with a ``.shape`` (tensors, or meta tensors standing in
    for a sharded checkpoint's entries); ``expected`` replaces ``model.state_dict()`` as what
    ``state`` must match; other arguments as in :func:`load_model_state`.
    """
    problem = first_mismatch(model.state_dict() if expected is None else expected, state)
    if problem is None:
        return
    trained = trained_model_class(checkpoint_config)
    built = type(model).__name__
    origin = f"; it was trained as {trained}, this run builds {built}" if trained != built else ""
    raise IncompatibleCheckpointError(
        f"checkpoint {path} is from another model: {problem}{origin if trained else ''}"
    )
