"""The checks a whole experiment config passes before anything runs: every field's declared
bounds and choices (``Config.validate``), the data files, and the rules that span sections.

Each error is one line naming the keys; what is merely unusual is returned as a warning.
"""

from __future__ import annotations

from pathlib import Path

from seqlab.core.config import ConfigError
from seqlab.data.data_paths import check_data_paths
from seqlab.train.experiment import ExperimentConfig
from seqlab.train.trainer_config import TrainerConfig


def check_experiment(config: ExperimentConfig, world_size: int | None = None) -> list[str]:
    """Checks ``config`` for a training run of ``world_size`` processes (None: not training,
    so the parallelism rules are not checked); returns warnings to print.

    Raises:
      ConfigError: the first problem, naming its keys.
    """
    config.validate()
    check_data_paths(config.data)
    _check_vocabulary(config)
    if world_size is not None:
        _check_parallelism(config, world_size)
    start = config.trainer.init_from_checkpoint
    if start and not Path(start).exists():
        raise ConfigError(f"trainer.init_from_checkpoint={start}: no such file or logdir")
    _check_fused_lm(config)
    return _warmup_warnings(config.trainer)


def _check_fused_lm(config: ExperimentConfig) -> None:
    """A fused language model's logdir exists, so that a run that decodes with it does not
    fail at its first decode, after training."""
    for key, value in config.flatten().items():
        if key.endswith("lm_fusion.lm_logdir") and value:
            if not (Path(value) / "config.json").is_file():
                raise ConfigError(
                    f"{key}={value}: not a training logdir (no config.json); train the "
                    "language model first (docs/speech.md, 'Language model fusion')"
                )


def _check_vocabulary(config: ExperimentConfig) -> None:
    """Every output vocabulary of the task holds the pieces of a tokenizer trained to
    ``data...tokenizer.vocab_size`` (a given ``model_path`` is checked when it is loaded)."""
    flat = config.flatten()
    tokenizers = {
        key: size
        for key, size in flat.items()
        if key.startswith("data.")
        and key.endswith("tokenizer.vocab_size")
        and not flat.get(key.removesuffix("vocab_size") + "model_path")
    }
    for key, size in flat.items():
        if not (key.startswith("task.") and key.endswith("vocab_size")):
            continue
        for tokenizer_key, pieces in tokenizers.items():
            if size < pieces:
                raise ConfigError(
                    f"{key}={size} is smaller than {tokenizer_key}={pieces}: token ids past "
                    f"{size - 1} would have no embedding; set {key} to {pieces}"
                )


def _check_parallelism(config: ExperimentConfig, world_size: int) -> None:
    trainer = config.trainer
    strategy = trainer.distributed.strategy
    if world_size == 1 and strategy in ("ddp", "fsdp", "tensor", "pipeline"):
        raise ConfigError(
            f"trainer.distributed.strategy={strategy} needs several processes: add --nproc N "
            "(or run under torchrun), or set it to auto or none"
        )
    if world_size > 1 and strategy == "none":
        raise ConfigError(
            f"trainer.distributed.strategy=none, but the job has {world_size} processes; "
            "use auto, ddp, fsdp, tensor or pipeline"
        )
    if trainer.distributed.mesh and strategy not in ("tensor", "pipeline"):
        raise ConfigError(
            f"trainer.distributed.mesh={list(trainer.distributed.mesh)} needs "
            f"trainer.distributed.strategy=tensor or pipeline, not {strategy}; leave it empty"
        )
    _, degree = trainer.distributed.mesh_shape(world_size)  # (processes per model group)
    if world_size > 1 and strategy == "tensor":
        from seqlab.distributed.tensor_parallel import check_tensor_parallel

        check_tensor_parallel(config.task, degree)
        if config.quant.mode != "none":
            raise ConfigError(
                f"quant.mode={config.quant.mode} does not work with "
                "trainer.distributed.strategy=tensor yet (its clipping ranges would be per "
                "shard); use strategy=ddp"
            )
    if world_size > 1 and strategy == "pipeline":
        from seqlab.distributed.pipeline_parallel import check_pipeline

        check_pipeline(trainer.distributed, config.task, degree)
        if trainer.mixed_precision == "float16":
            raise ConfigError(
                "trainer.mixed_precision=float16 does not work with "
                "trainer.distributed.strategy=pipeline (each stage's loss scaler would skip "
                "steps on its own); use bfloat16"
            )
    if world_size > 1 and strategy in ("fsdp", "tensor", "pipeline"):
        # The moving average, weight noise and warm start use full copies of the weights.
        used = [
            key
            for key, on in (
                ("trainer.ema.decay", trainer.ema.decay > 0),
                ("trainer.weight_noise.std", trainer.weight_noise.std > 0),
                ("trainer.init_from_checkpoint", bool(trainer.init_from_checkpoint)),
            )
            if on
        ]
        if used:
            raise ConfigError(
                f"{' and '.join(used)} do not work with trainer.distributed.strategy="
                f"{strategy} yet; "
                "use strategy=ddp or turn them off"
            )


def _warmup_warnings(trainer: TrainerConfig) -> list[str]:
    warmup = trainer.schedule.warmup_steps
    if warmup > trainer.max_steps:
        return [
            f"trainer.schedule.warmup_steps={warmup} is more than trainer.max_steps="
            f"{trainer.max_steps}: the learning rate never reaches "
            "trainer.schedule.peak_learning_rate"
        ]
    return []
