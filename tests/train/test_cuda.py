"""Training, checkpoints and decoding on a CUDA device (skipped without one).

scripts/gpu_check.sh runs these on a GPU machine: a run trains on the GPU in bfloat16 and in
float16 with a loss scaler, its checkpoint resumes and decodes on the CPU, a CPU checkpoint
resumes on the GPU, and the Predictor decodes on the GPU as it does on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from seqlab.export.predictor import Predictor
from seqlab.train.checkpoint import load_checkpoint
from seqlab.train.trainer import GRAD_SCALER_CHECKPOINT_KEY, Trainer

pytestmark = pytest.mark.cuda

SOURCES = ["In the beginning God created the heaven and the earth.", "And God said"]


def test_bfloat16_run_on_gpu_resumes_and_decodes_on_cpu(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    gpu = tiny_mt_trainer(
        tmp_path, "trainer.device=cuda", "trainer.mixed_precision=bfloat16", "trainer.max_steps=6"
    )
    assert next(gpu.task.parameters()).device.type == "cuda"
    assert gpu.train() == 6
    payload = load_checkpoint(gpu.context.checkpoint_dir / "ckpt-00000006.pt")
    assert all(t.device.type == "cpu" for t in payload["model"].values())
    assert "cuda" in payload["rng"]

    cpu = tiny_mt_trainer(tmp_path, "trainer.device=cpu", "trainer.max_steps=8")
    assert cpu.train() == 8
    assert next(cpu.task.parameters()).device.type == "cpu"
    on_cpu = Predictor.from_logdir(tmp_path, device="cpu").predict(SOURCES)
    on_gpu = Predictor.from_logdir(tmp_path, device="cuda").predict(SOURCES)
    assert len(on_cpu) == len(on_gpu) == len(SOURCES)


def test_cpu_checkpoint_resumes_on_gpu(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    assert tiny_mt_trainer(tmp_path, "trainer.device=cpu", "trainer.max_steps=3").train() == 3
    gpu = tiny_mt_trainer(tmp_path, "trainer.device=cuda", "trainer.max_steps=5")
    assert gpu.train() == 5
    state = gpu.optimizer.state[gpu.params[0]]
    assert all(v.device.type == "cuda" for v in state.values() if v.dim() > 0)


def test_float16_trains_with_a_checkpointed_loss_scaler(
    tiny_mt_trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    trainer = tiny_mt_trainer(
        tmp_path, "trainer.device=cuda", "trainer.mixed_precision=float16", "trainer.max_steps=5"
    )
    assert trainer.scaler.is_enabled()
    first = trainer.train_step(next(trainer.stream))["loss"]
    assert trainer.train() == 5
    path = trainer.context.checkpoint_dir / "ckpt-00000005.pt"
    scale = load_checkpoint(path)[GRAD_SCALER_CHECKPOINT_KEY]["scale"]
    assert float(scale) == trainer.scaler.get_scale()
    resumed = tiny_mt_trainer(
        tmp_path, "trainer.device=cuda", "trainer.mixed_precision=float16", "trainer.max_steps=12"
    )
    assert resumed.restore() and resumed.scaler.get_scale() == float(scale)
    assert resumed.train() == 12
    assert torch.isfinite(torch.tensor(first))
