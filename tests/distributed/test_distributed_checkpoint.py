"""Distributed (DCP) checkpoints in one process: round trip into the single-file layout,
checksums with fallback, no code run on load, temporaries and keep-K."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict

from seqlab.distributed.checkpoint import (
    MANIFEST_FILE,
    METADATA_FILE,
    read_sharded_checkpoint,
    save_sharded_checkpoint,
    sharded_checkpoint_path,
    sharded_model_shapes,
)
from seqlab.distributed.process_group import World
from seqlab.train.checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    list_checkpoints,
    load_latest_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
)
from seqlab.train.checkpoint_fit import check_model_fit


def trained_model(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        model(torch.randn(4, 6)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def save(directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> Path:
    model_state, optimizer_state = get_state_dict(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is unavailable")
        return save_sharded_checkpoint(
            directory,
            step,
            {"model": model_state, "optimizer": optimizer_state},
            {"data_stream": {"epoch": 1, "index": step}},
            world=World(),
        )


def test_round_trip_into_the_single_file_layout(tmp_path: Path) -> None:
    model, optimizer = trained_model()
    path = save(tmp_path, 7, model, optimizer)
    assert path == sharded_checkpoint_path(tmp_path, 7) and path.is_dir()
    assert (tmp_path / "latest").read_text().strip() == path.name
    payload = read_sharded_checkpoint(path)
    assert payload["step"] == 7 and payload["data_stream"] == {"epoch": 1, "index": 7}
    for name, value in model.state_dict().items():
        torch.testing.assert_close(payload["model"][name], value, rtol=0, atol=0)
    fresh, fresh_optimizer = trained_model(seed=1)
    fresh.load_state_dict(payload["model"])
    fresh_optimizer.load_state_dict(payload["optimizer"])  # index-keyed, as torch expects
    for (index, state), expected in zip(
        fresh_optimizer.state_dict()["state"].items(),
        optimizer.state_dict()["state"].values(),
        strict=True,
    ):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state[key], expected[key], rtol=0, atol=0, msg=str(index))


def test_corrupt_shard_is_refused_and_loading_falls_back(tmp_path: Path) -> None:
    model, optimizer = trained_model()
    save(tmp_path, 1, model, optimizer)
    newest = save(tmp_path, 2, model, optimizer)
    shard = next(newest.glob("__0_*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"__0_0\.distcp is corrupt"):
        read_sharded_checkpoint(newest)
    found = load_latest_checkpoint(tmp_path)
    assert found is not None and found[1]["step"] == 1
    assert newest.is_dir()  # kept for inspection


def test_metadata_that_would_run_code_is_refused(tmp_path: Path) -> None:
    model, optimizer = trained_model()
    path = save(tmp_path, 3, model, optimizer)
    marker = tmp_path / "code-ran"

    class Exploit:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    forged = pickle.dumps(Exploit())
    (path / METADATA_FILE).write_bytes(forged)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"][METADATA_FILE] = hashlib.sha256(forged).hexdigest()  # a consistent forgery
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not allowed in DCP metadata"):
        read_sharded_checkpoint(path)
    assert not marker.exists()


def test_stale_temporary_directories_are_removed_and_old_checkpoints_pruned(
    tmp_path: Path,
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stale = tmp_path / f".ckpt-00000005.dcp.tmp-{dead.stdout.strip()}"
    (stale / "sub").mkdir(parents=True)
    live = tmp_path / f".ckpt-00000006.dcp.tmp-{os.getpid()}"
    live.mkdir()
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
    model, optimizer = trained_model()
    for step in (1, 2, 3, 4):
        save(tmp_path, step, model, optimizer)
    prune_checkpoints(tmp_path, 2, protected={1})
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1, 3, 4]
    prune_checkpoints(tmp_path, 2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 4]


def test_sharded_checkpoint_of_another_model_is_refused_naming_the_parameter(
    tmp_path: Path,
) -> None:
    """A multi-process resume checks the .dcp metadata's shapes before DCP loads anything."""
    model, optimizer = trained_model()
    path = save(tmp_path, 3, model, optimizer)
    check_model_fit(model, sharded_model_shapes(path), path)  # the same model fits
    wider = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 3))
    with pytest.raises(IncompatibleCheckpointError, match=r"is from another model: .*'0\.weight'"):
        check_model_fit(wider, sharded_model_shapes(path), path)
