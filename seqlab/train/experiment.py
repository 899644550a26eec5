"""The top-level config of an experiment: task, data and trainer."""

from __future__ import annotations

import dataclasses

from seqlab.core.config import Config, param
from seqlab.quant.qat import QuantizationConfig
from seqlab.train.trainer_config import TrainerConfig


@dataclasses.dataclass
class ExperimentConfig(Config):
    """Everything a run needs; printed whole into the logdir and stored in every checkpoint."""

    name: str = param("", doc="Registered name of the experiment (set by the registry).")
    seed: int = param(1234, doc="Seed for initialization, data order and dropout.")
    task: Config = param(Config(), doc="The model with its loss, decoding and metrics.")
    data: Config = param(Config(), doc="Input data and tokenizer.")
    trainer: TrainerConfig = param(TrainerConfig(), doc="Optimization, checkpoints, intervals.")
    quant: QuantizationConfig = param(
        QuantizationConfig(), doc="Quantization-aware training; quant.mode=qat turns it on."
    )
