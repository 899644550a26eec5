"""What every runner builds from an experiment config and a logdir: data, tokenizer, task."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from seqlab.core.config import Config
from seqlab.data.sentencepiece_tokenizer import copy_model
from seqlab.models.base import Task
from seqlab.quant.qat import build_task
from seqlab.train.device import CPU
from seqlab.train.experiment import ExperimentConfig

log = logging.getLogger(__name__)

CONFIG_JSON = "config.json"
CHECKPOINT_DIR = "checkpoints"
TOKENIZER_FILE = "spm.model"
TRAINING_DATA_FILE = "training_data.json"


class LogdirError(FileNotFoundError):
    """A logdir lacks what a runner needs; the message says which command makes it."""


@dataclasses.dataclass
class RunContext:
    """The pieces of a run shared by the trainer, evaler, decoder and predictor."""

    config: ExperimentConfig
    logdir: Path
    data: Any
    task: Task
    device: torch.device = CPU

    @property
    def checkpoint_dir(self) -> Path:
        return self.logdir / CHECKPOINT_DIR


def write_config_files(
    config: ExperimentConfig, logdir: Path, preset: ExperimentConfig | None = None
) -> None:
    """Writes config.txt and config.json, and config_diff.txt against ``preset`` (the
    registered experiment the config came from) when there is one."""
    logdir.mkdir(parents=True, exist_ok=True)
    files = {
        "config.txt": config.to_text(),
        CONFIG_JSON: json.dumps(config.to_dict(), indent=1, sort_keys=True) + "\n",
    }
    if preset is not None:
        files["config_diff.txt"] = config.diff(preset) or "# identical to the registered preset\n"
    for name, text in files.items():
        tmp = logdir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, logdir / name)


def read_logdir_config(logdir: Path) -> ExperimentConfig:
    """The config a logdir was trained with."""
    path = logdir / CONFIG_JSON
    if not path.exists():
        raise LogdirError(
            f"{path} not found: is {logdir} a training logdir? "
            f"(`seqlab train --experiment NAME --logdir {logdir}` creates it)"
        )
    config = Config.from_dict(json.loads(path.read_text()))
    assert isinstance(config, ExperimentConfig)
    return config


def build_context(
    config: ExperimentConfig,
    logdir: Path,
    train_tokenizer: bool,
    device: torch.device = CPU,
) -> RunContext:
    """Seeds torch, prepares the data and tokenizer, and builds the task on ``device``.

    The tokenizer is kept in the logdir (``spm.model``) so that a logdir is self-contained.
    The weights are initialized on the CPU, whatever the device, so that a seed gives the same
    model everywhere.
    """
    if config.trainer.num_threads > 0:
        torch.set_num_threads(config.trainer.num_threads)
    torch.manual_seed(config.seed)
    data = config.data.build()
    tokenizer_path = logdir / TOKENIZER_FILE
    if tokenizer_path.exists():
        data.load_tokenizer(tokenizer_path)
    elif train_tokenizer:
        data.load_tokenizer()
        logdir.mkdir(parents=True, exist_ok=True)
        copy_model(data.tokenizer_path, tokenizer_path)
    else:
        raise LogdirError(f"{tokenizer_path} not found; train in {logdir} first")
    task = build_task(config.task, config.quant)
    task.bind_data(data)
    task.to(device)
    return RunContext(config=config, logdir=logdir, data=data, task=task, device=device)


def training_data_identity(examples: Any) -> dict[str, Any] | None:
    """What identifies the training examples a run reads (``data``: its shard set or stream
    key; ``sources``: each file's path, size and content hash; the tokenizer's hash), or None
    for data held in memory."""
    identity = getattr(examples, "identity", None)
    return identity() if identity is not None else None


def check_training_data(logdir: Path, identity: dict[str, Any] | None, resuming: bool) -> None:
    """Records the run's training data in the logdir, or, when ``resuming``, refuses data
    other than the one recorded (an edited training file, another tokenizer, shards instead
    of streaming).

    Raises:
      LogdirError: naming both data keys and what differs.
    """
    path = logdir / TRAINING_DATA_FILE
    if identity is None:
        return
    if resuming and path.is_file():
        recorded = json.loads(path.read_text())
        # Files written before streaming existed name one "source" and its "shard_set".
        recorded_data = recorded.get("data", recorded.get("shard_set"))
        if recorded_data != identity["data"]:
            old = {s.get("path"): s for s in recorded.get("sources", [recorded.get("source", {})])}
            changed = [
                f"{s['path']} changed (sha256 {old[s['path']].get('sha256', '?')[:12]} -> "
                f"{s['sha256'][:12]})"
                for s in identity["sources"]
                if s["path"] in old and old[s["path"]].get("sha256") != s["sha256"]
            ]
            if recorded.get("tokenizer_sha256") != identity["tokenizer_sha256"]:
                changed.append("the tokenizer changed")
            what = "; ".join(changed) or "other files, or shards instead of streaming"
            raise LogdirError(
                f"{path} records training data {recorded_data}, but this run reads "
                f"{identity['data']}: {what}; resume with the data the run started with, or "
                f"train in a new --logdir"
            )
        return
    logdir.mkdir(parents=True, exist_ok=True)
    tmp = logdir / f".{TRAINING_DATA_FILE}.tmp"
    tmp.write_text(json.dumps(identity, indent=1) + "\n")
    os.replace(tmp, path)
