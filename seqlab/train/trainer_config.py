"""Config of the training loop (optimizer, schedule, intervals, checkpoints)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from seqlab.core.config import Config, param
from seqlab.train.ema import ExponentialMovingAverage
from seqlab.train.mixed_precision import MixedPrecision
from seqlab.train.optim import Adam, LearningRateSchedule, Optimizer
from seqlab.train.parallelism_config import ParallelismConfig
from seqlab.train.score_history import EarlyStopConfig, KeepBestConfig
from seqlab.train.weight_noise import WeightNoise


@dataclasses.dataclass
class TrainerConfig(Config):
    """How to train: steps, optimizer, schedule, clipping, intervals and checkpoints."""

    max_steps: int = param(10000, doc="Total optimizer updates.", at_least=1)
    max_train_seconds: float = param(
        0.0,
        doc="Also stop once this many seconds went into training steps and their input "
        "(in-training eval and decode excluded; counted across resumes; 0 = no limit). "
        "Schedules still run over max_steps.",
        at_least=0,
    )
    init_from_checkpoint: str = param(
        "",
        doc="A new run starts from this checkpoint's weights (a file, or a logdir's newest); "
        "the step, optimizer and data start afresh. Ignored when the logdir has a checkpoint.",
    )
    optimizer: Optimizer.Config = param(Adam.Config(), doc="Optimizer: Adam, Adafactor or SGD.")
    schedule: LearningRateSchedule.Config = param(
        LearningRateSchedule.Config(), doc="Learning-rate schedule."
    )
    weight_noise: WeightNoise.Config = param(
        WeightNoise.Config(), doc="Regularizer: Gaussian noise on the weights in training."
    )
    ema: ExponentialMovingAverage.Config = param(
        ExponentialMovingAverage.Config(), doc="Exponential moving average of the weights."
    )
    use_ema_for_eval: bool = param(
        False, doc="Eval and decode with the weights' moving average (also seqlab eval/decode)."
    )
    clip_gradient_norm: float = param(
        1.0, doc="Clip the global gradient norm (0 = off).", at_least=0
    )
    log_every_steps: int = param(20, doc="Write train summaries every N steps.", at_least=1)
    checkpoint_every_steps: int = param(
        500, doc="Save a checkpoint every N steps (0 = off).", at_least=0
    )
    checkpoint_every_seconds: float = param(
        600.0, doc="Also save after this many seconds.", at_least=0
    )
    keep_checkpoints: int = param(5, doc="Keep the newest K checkpoints (0 = all).", at_least=0)
    keep_best: KeepBestConfig = param(
        KeepBestConfig(), doc="Also keep the best checkpoints by a dev metric (off by default)."
    )
    early_stop: EarlyStopConfig = param(
        EarlyStopConfig(), doc="Stop when a dev metric stops improving (off by default)."
    )
    eval_every_steps: int = param(
        1000, doc="Evaluate dev loss every N steps (0 = off).", at_least=0
    )
    decode_every_steps: int = param(
        2000, doc="Decode dev and score every N steps (0 = off).", at_least=0
    )
    eval_datasets: tuple[str, ...] = param(("dev",), doc="Splits evaluated during training.")
    decode_datasets: tuple[str, ...] = param(("dev",), doc="Splits decoded during training.")
    decode_limit: int = param(
        0, doc="Decode only the first N examples in-training (0 = all).", at_least=0
    )
    device: str = param(
        "auto",
        doc="Where to train: auto (CUDA when present, else CPU), cpu, cuda or cuda:N. Under "
        "torchrun each process takes cuda:LOCAL_RANK.",
    )
    mixed_precision: MixedPrecision = param(
        "none",
        doc="Autocast dtype for forward/backward: none, bfloat16 (CPU and CUDA) or float16 "
        "(CUDA, with a loss scaler); weights stay float32.",
    )
    allow_tf32: bool = param(
        False,
        doc="CUDA: float32 matrix multiplies and convolutions in TF32 (faster, 10-bit "
        "mantissa inputs). No effect on CPU.",
    )
    prefetch_batches: int = param(
        -1,
        doc="Batches collated ahead on a background thread (pinned for CUDA copies); 0 "
        "collates on the training thread; -1 (auto): 2 on CUDA, 0 on CPU, where the thread "
        "competes with the step for the cores (docs/benchmarks.md).",
        at_least=-1,
    )
    num_threads: int = param(0, doc="torch intra-op threads (0 = all cores).", at_least=0)
    nan_policy: Literal["stop", "skip"] = param(
        "stop", doc="On a NaN/inf loss or gradient: stop or skip the step."
    )
    grad_accum_steps: int = param(
        1,
        doc="Batches (of data.max_tokens each) whose gradients make one optimizer update.",
        at_least=1,
    )
    distributed: ParallelismConfig = param(
        ParallelismConfig(),
        doc="Parallelism strategy (none, DDP or FSDP2) and the torchrun process group.",
    )
