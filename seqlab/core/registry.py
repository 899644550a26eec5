"""The experiment registry: a plain dict from dotted names to functions returning configs.

Experiment modules under ``seqlab.experiments`` register themselves with
:func:`register_experiment`; :func:`get_experiment` imports them on first use.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

ExperimentFn = Callable[[], Any]

_EXPERIMENTS: dict[str, ExperimentFn] = {}
_loaded = False


class UnknownExperimentError(KeyError):
    """An experiment name that is not registered; the message lists the close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_experiment(name: str) -> Callable[[ExperimentFn], ExperimentFn]:
    """Decorator registering ``fn`` (no arguments, returns an ExperimentConfig) as ``name``."""

    def wrap(fn: ExperimentFn) -> ExperimentFn:
        if name in _EXPERIMENTS and _EXPERIMENTS[name] is not fn:
            raise ValueError(f"experiment '{name}' is registered twice")
        _EXPERIMENTS[name] = fn
        return fn

    return wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    import seqlab.experiments as root

    for info in pkgutil.walk_packages(root.__path__, prefix=root.__name__ + "."):
        importlib.import_module(info.name)
    from seqlab.core.user_modules import import_entry_point_modules

    import_entry_point_modules()
    _loaded = True


def list_experiments() -> list[str]:
    """All registered experiment names, sorted."""
    _load_all()
    return sorted(_EXPERIMENTS)


def get_experiment(name: str) -> Any:
    """A fresh config of the experiment ``name``.

    Raises:
      UnknownExperimentError: listing the closest registered names.
    """
    _load_all()
    if name not in _EXPERIMENTS:
        close = difflib.get_close_matches(name, list(_EXPERIMENTS), n=5, cutoff=0.4)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        raise UnknownExperimentError(
            f"unknown experiment '{name}'{hint} (`seqlab list` shows them all)"
        )
    config = _EXPERIMENTS[name]()
    config.name = name
    return config
