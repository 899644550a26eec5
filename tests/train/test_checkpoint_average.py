"""``seqlab average``: checkpoint averaging in float32, non-float tensors from the newest, a
file outside keep-last rotation that every command takes with ``--checkpoint``."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.state_dict import get_state_dict

from seqlab.cli import main
from seqlab.distributed.checkpoint import save_sharded_checkpoint
from seqlab.distributed.process_group import World
from seqlab.train.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from seqlab.train.checkpoint_average import write_average
from seqlab.train.run_context import read_logdir_config
from seqlab.train.warm_start import warm_start


def weights(scale: float) -> dict[str, torch.Tensor]:
    return {
        "w": torch.full((2, 3), scale),
        "half": torch.full((4,), scale, dtype=torch.bfloat16),
        "count": torch.tensor(int(scale), dtype=torch.int64),
    }


def test_float_tensors_are_averaged_in_float32_and_others_taken_from_the_newest(
    tmp_path: Path,
) -> None:
    for step, scale in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 100.0)):
        save_checkpoint(tmp_path, step, {"model": weights(scale), "config": {"n": step}}, keep=0)
    path, steps = write_average(tmp_path, last=3)
    assert steps == [2, 3, 4] and path == tmp_path / "averaged-2-3-4.pt"
    payload = load_checkpoint(path)
    assert payload["step"] == 4 and payload["config"] == {"n": 4}
    model = payload["model"]
    assert torch.equal(model["w"], torch.full((2, 3), 106.0 / 3))
    assert model["half"].dtype == torch.bfloat16
    assert torch.equal(model["half"], torch.full((4,), 106.0 / 3).to(torch.bfloat16))
    assert model["count"].item() == 100 and model["count"].dtype == torch.int64
    # Chosen steps; and the average is outside the rotation that keep-last prunes.
    path, steps = write_average(tmp_path, steps=[3, 1])
    assert steps == [1, 3] and torch.equal(
        load_checkpoint(path)["model"]["w"], torch.full((2, 3), 2.5)
    )
    prune_checkpoints(tmp_path, 1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4] and path.exists()


def test_a_sharded_checkpoint_is_averaged_with_a_single_file(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is unavailable")
        save_sharded_checkpoint(
            tmp_path, 1, {"model": model_state, "optimizer": optimizer_state}, {}, World()
        )
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    save_checkpoint(tmp_path, 2, {"model": model.state_dict()}, keep=0)
    path, steps = write_average(tmp_path, last=2)
    averaged = load_checkpoint(path)["model"]
    for name, tensor in model.state_dict().items():
        assert torch.allclose(averaged[name], (first[name] + tensor) / 2)


def test_checkpoints_of_other_models_or_missing_steps_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_checkpoint(tmp_path / "checkpoints", 1, {"model": weights(1.0)}, keep=0)
    other = {**weights(2.0), "w": torch.zeros(3, 3)}
    save_checkpoint(tmp_path / "checkpoints", 2, {"model": other}, keep=0)
    logdir = str(tmp_path)
    cases = {
        ("--last", "2"): "has shape [2, 3] in the checkpoint and [3, 3] in the newest",
        ("--last", "3"): "--last 3: only 2 checkpoints",
        ("--steps", "1,5"): "no checkpoint of step 5; ",
        (): "pass --last N",
    }
    for args, message in cases.items():
        assert main(["average", "--logdir", logdir, *args]) in (1, 2)
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    with pytest.raises(SystemExit):
        main(["average", "--logdir", logdir, "--steps", "1,x"])
    assert "expected steps separated by commas" in capsys.readouterr().err


def test_every_command_takes_the_averaged_checkpoint(
    tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logdir = tmp_path / "run"
    shutil.copytree(tiny_run_dir, logdir)
    assert main(["average", "--logdir", str(logdir), "--last", "3"]) == 0
    averaged = logdir / "checkpoints" / "averaged-2-4-6.pt"
    assert f"into {averaged}" in capsys.readouterr().out
    # By file name in the checkpoint directory, or by path; results kept apart from step 6's.
    assert main(["decode", "--logdir", str(logdir), "--checkpoint", averaged.name]) == 0
    score = json.loads((logdir / "decode_dev_averaged-2-4-6" / "score-00000006.json").read_text())
    assert "bleu" in score and not (logdir / "decode_dev").exists()
    assert main(["eval", "--logdir", str(logdir), "--checkpoint", str(averaged)]) == 0
    assert (logdir / "eval_dev_averaged-2-4-6" / "metrics-00000006.json").exists()
    assert (
        main(["infer", "--logdir", str(logdir), "--checkpoint", str(averaged), "--prompt", "God"])
        == 0
    )
    out = tmp_path / "artifact"
    args = ["--format", "torch", "--out", str(out), "--checkpoint", str(averaged)]
    assert main(["export", "--logdir", str(logdir), *args]) == 0
    # A new run can start from it.
    task = read_logdir_config(logdir).task.build()
    assert "(step 6)" in warm_start(task, str(averaged))
    loaded = task.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in load_checkpoint(averaged)["model"].items())
