"""Changes to the config of a logdir that already holds checkpoints.

A run resumed, or a checkpoint evaluated, decoded or served, with ``--set`` overrides may
change anything that keeps the model's parameters: the learning rate, the step count,
decoding settings, data paths. A change that alters the parameters' names or shapes is
refused in one line naming its config keys, before any data is prepared or weights loaded.
Every training start records its config in ``config_history/`` (dated, with the step it
starts at and its diff against the config before it), so the settings each checkpoint was
trained with stay known.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from seqlab.core.config import ConfigError
from seqlab.quant.qat import build_task
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.run_context import CHECKPOINT_DIR, CONFIG_JSON, read_logdir_config

log = logging.getLogger(__name__)

CONFIG_HISTORY_DIR = "config_history"
# Config sections whose values build the model's parameters.
_MODEL_SECTIONS = ("task.", "quant.")


class ModelChangeError(ConfigError):
    """A config change would alter the parameters of a model that has checkpoints."""


def parameter_shapes(config: ExperimentConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the state of the model ``config`` builds.

    The model is built on the meta device (no memory, no initialization), or on the CPU for
    a user's layer that needs values while it is built.
    """
    try:
        with torch.device("meta"):
            task = build_task(config.task, config.quant)
    except (RuntimeError, NotImplementedError):
        task = build_task(config.task, config.quant)
    return {name: tuple(tensor.shape) for name, tensor in task.state_dict().items()}


def _first_difference(old: dict[str, tuple[int, ...]], new: dict[str, tuple[int, ...]]) -> str:
    """The first parameter (in the new model's order, then the old's) whose shape differs."""
    for name in [*new, *(n for n in old if n not in new)]:
        if old.get(name) != new.get(name):
            before, after = (
                list(s) if s is not None else "absent" for s in (old.get(name), new.get(name))
            )
            return f"parameter '{name}': {before} -> {after}"
    return ""


def _keys_that_change_shapes(
    old: ExperimentConfig,
    new: ExperimentConfig,
    old_shapes: dict[str, tuple[int, ...]],
    changed: list[str],
) -> list[str]:
    """Of the ``changed`` keys, the model keys (task.*, quant.*) that alone change ``old``'s
    parameters; all the changed model keys when none does alone (changes that only act
    together; every changed key if none is a model key)."""
    model_keys = [key for key in changed if key.startswith(_MODEL_SECTIONS)]
    new_values = dict(line.split(" = ", 1) for line in new.to_text().splitlines())
    alone = []
    for key in model_keys:
        trial = old.copy()
        try:
            trial.set(key, new_values[key])
            if parameter_shapes(trial) != old_shapes:
                alone.append(key)
        except (ConfigError, KeyError, RuntimeError):
            alone.append(key)  # a key removed, or one that cannot be built alone: a cause
    return alone or model_keys or changed


def check_same_model(
    trained: ExperimentConfig, config: ExperimentConfig, where: Path, advice: str
) -> None:
    """Refuses ``config`` if it builds other parameters than ``trained``, the config that the
    checkpoints in ``where`` were trained with.

    Raises:
      ModelChangeError: naming the changed keys (with both values), the first parameter
        that differs, and ``advice``.
    """
    diff = {line.partition(": ")[0]: line for line in config.diff(trained).splitlines()}
    if not diff:
        return
    old_shapes, new_shapes = parameter_shapes(trained), parameter_shapes(config)
    if old_shapes == new_shapes:
        return
    keys = _keys_that_change_shapes(trained, config, old_shapes, list(diff))
    raise ModelChangeError(
        f"{'; '.join(diff[key] for key in keys)} changes the model that the checkpoints in "
        f"{where} hold ({_first_difference(old_shapes, new_shapes)}); {advice}"
    )


def config_for_checkpoints(logdir: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of ``logdir`` with ``overrides`` (``--set`` of eval, decode, infer)
    applied, for evaluating, decoding or serving its checkpoints.

    Raises:
      LogdirError: the logdir has no config.json.
      ConfigError: a bad override, or (ModelChangeError) one that alters the model.
    """
    trained = read_logdir_config(logdir)
    if not overrides:
        return trained
    config = trained.copy().apply_overrides(list(overrides))
    check_same_model(
        trained,
        config,
        logdir / CHECKPOINT_DIR,
        "only settings that keep the model (decoding, data, devices) can change here",
    )
    return config


def trained_config(logdir: Path) -> ExperimentConfig | None:
    """The config the logdir's run was last trained with (its config.json), or None where
    there is none or it cannot be read (a warning says why)."""
    if not (logdir / CONFIG_JSON).is_file():
        return None
    try:
        return read_logdir_config(logdir)
    except (ConfigError, ValueError) as e:
        log.warning("%s cannot be compared with this run's config: %s", logdir / CONFIG_JSON, e)
        return None


def _utc_stamp(seconds: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(
        datetime.datetime.now().timestamp() if seconds is None else seconds, datetime.UTC
    )
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _write_entry(directory: Path, stamp: str, step: int, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}-step{step:08d}.txt"
    number = 1
    while path.exists():  # two starts within a second
        path = directory / f"{stamp}-step{step:08d}-{number}.txt"
        number += 1
    path.write_text(text)
    return path


def record_config_history(
    logdir: Path, config: ExperimentConfig, step: int
) -> tuple[Path | None, str]:
    """Adds ``config`` to ``logdir/config_history/`` when it differs from the config the run
    was last trained with (config.json, still the previous one), or starts the history.

    Call before config.json is rewritten. An entry is named ``<UTC time>-step<N>.txt``, N the
    step training starts at, and holds the full config after comment lines with its diff.
    A logdir from before histories were kept first gets its previous config, dated by
    config.json's modification time.

    Returns:
      (the new entry or None, the ``key: old -> new`` lines that changed; "" if none).
    """
    directory = logdir / CONFIG_HISTORY_DIR
    previous = trained_config(logdir)
    changes = config.diff(previous) if previous is not None else ""
    has_history = directory.is_dir() and any(directory.iterdir())
    if has_history and not changes:
        return None, ""
    if not has_history and previous is not None and changes:
        mtime = (logdir / CONFIG_JSON).stat().st_mtime
        header = "# the config this run was trained with before its history was kept\n"
        _write_entry(directory, _utc_stamp(mtime), 0, header + previous.to_text())
    header = f"# config of the training that starts at step {step}\n"
    if changes:
        header += "# changed from the config before:\n" + "".join(
            f"#   {line}\n" for line in changes.splitlines()
        )
    return _write_entry(directory, _utc_stamp(), step, header + config.to_text()), changes
