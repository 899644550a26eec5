"""docs/python-api.md works as written: its Python blocks, run in order in one process at a
tiny step count, build a registered and an unregistered experiment, train, evaluate, decode
and predict."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "python-api.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)


def tiny(code: str) -> str:
    """The page's code with a few training steps on a few hundred pairs."""
    code = re.sub(r"max_steps=\d+", "max_steps=4", code)
    code = re.sub(r"train_limit=\d+", "train_limit=300", code)
    code = re.sub(r"eval_limit(=| = )\d+", r"eval_limit\g<1>8", code)
    return re.sub(r"_every_steps=100\b", "_every_steps=2", code)


def test_the_page_has_every_step() -> None:
    code = "\n".join(python_blocks())
    for call in (
        "get_experiment(",
        "ExperimentConfig(",
        "Trainer(",
        ".train()",
        "evaluate(",
        "decode_dataset(",
        "Predictor.from_logdir(",
        ".predict([",
    ):
        assert call in code, f"docs/python-api.md lacks {call}"
    assert "python-api.md" in (REPO / "README.md").read_text()


@pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)
def test_the_pages_code_runs(tmp_path: Path, bible_cache_dir: Path) -> None:
    script = tiny("\n".join(python_blocks()))
    assert "max_steps=4" in script and "max_steps=200" not in script
    env = dict(os.environ, SEQLAB_CACHE=str(bible_cache_dir), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "trainer.max_steps: 200 -> 4\n" in out  # the registered config's diff
    assert "trained to step 4; checkpoints in runs/my_tiny_transformer/checkpoints" in out
    loss = re.search(r"dev loss (\d+\.\d+) over \d+ tokens", out)
    assert loss and f"dev loss again: {loss.group(1)}\n" in out  # the same weights, reloaded
    assert "test BLEU " in out and " on 8 sentences" in out  # eval_limit: 8
    logdir = tmp_path / "runs" / "my_tiny_transformer"
    assert f"from {logdir.relative_to(tmp_path)}/checkpoints/ckpt-00000004" in out
    assert (logdir / "config.json").is_file() and (logdir / "eval_dev").is_dir()
