"""trainer.device and --device: resolved, and refused in one line when the machine lacks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab.core.config import ConfigError
from seqlab.core.registry import get_experiment
from seqlab.train.device import DeviceError, resolve_device
from seqlab.train.mixed_precision import check_mixed_precision
from seqlab.train.trainer import Trainer
from seqlab.train.world import World

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
REPO = Path(__file__).resolve().parents[2]


def test_cpu_and_auto_resolve_without_cuda() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected


@pytest.mark.parametrize("setting", ["gpu", "cuda:x", "cpu:0", "auto:1", ""])
def test_unknown_settings_are_named(setting: str) -> None:
    with pytest.raises(DeviceError, match=r"^trainer\.device=.*expected auto, cpu, cuda"):
        resolve_device(setting)


@no_cuda
@pytest.mark.parametrize("setting", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_refused_naming_the_setting(setting: str) -> None:
    with pytest.raises(DeviceError) as info:
        resolve_device(setting, name="--device")
    message = str(info.value)
    assert message.startswith(f"--device={setting}: ")
    assert "use --device=cpu or auto" in message
    assert "\n" not in message


@pytest.mark.cuda
def test_under_torchrun_each_rank_takes_its_local_gpu() -> None:
    count = torch.cuda.device_count()
    world = World(rank=count - 1, world_size=count, local_rank=count - 1)
    assert resolve_device("cuda", world) == torch.device("cuda", count - 1)
    assert resolve_device("auto", world) == torch.device("cuda", count - 1)
    if count > 1:
        with pytest.raises(DeviceError, match="names one GPU"):
            resolve_device("cuda:0", world)
    with pytest.raises(DeviceError, match=f"GPU {count}, but {count}"):
        resolve_device(f"cuda:{count}")


def test_float16_needs_cuda_and_unknown_precisions_are_refused() -> None:
    with pytest.raises(ConfigError, match="float16 needs a CUDA device"):
        check_mixed_precision("float16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="trainer.mixed_precision 'fp8'"):
        check_mixed_precision("fp8", torch.device("cpu"))
    check_mixed_precision("bfloat16", torch.device("cpu"))


@no_cuda
def test_trainer_refuses_cuda_before_preparing_any_data(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = get_experiment("mt.bible_en_es.transformer_tiny")
    config.apply_overrides([f"data.cache_dir={cache}", "trainer.device=cuda"])
    with pytest.raises(DeviceError, match=r"^trainer\.device=cuda: "):
        Trainer(config, tmp_path / "run", show_progress=False)
    assert not cache.exists() and not (tmp_path / "run").exists()


@no_cuda
def test_cli_train_and_decode_refuse_cuda_in_one_line(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    train = subprocess.run(
        [sys.executable, "-m", "seqlab", "train", "--experiment",
         "mt.bible_en_es.transformer_tiny", "--logdir", str(tmp_path / "run"),
         "--set", f"data.cache_dir={cache}", "--set", "trainer.device=cuda"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert train.returncode != 0
    lines = train.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqlab train: error: trainer.device=cuda: ")
    assert not cache.exists()
    decode = subprocess.run(
        [sys.executable, "-m", "seqlab", "decode", "--logdir", str(tmp_path / "none"),
         "--device", "cuda:1"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    lines = decode.stderr.strip().splitlines()
    assert decode.returncode != 0 and len(lines) == 1, decode.stderr
    assert lines[0].startswith("seqlab decode: error: --device=cuda:1: ")
