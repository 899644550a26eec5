"""docs/tutorial.md works as written: its marked shell blocks run at a tiny size, and the code
it quotes is the code in examples/punctuator/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "docs" / "tutorial.md"
TINY = (
    " --set data.train_limit=3000 --set data.eval_limit=40 --set trainer.max_steps=30"
    " --set trainer.eval_every_steps=0 --set trainer.decode_every_steps=0"
)


def marked_blocks(marker: str) -> list[tuple[str, str]]:
    """(argument of the marker, code) of every fenced block right after ``<!-- marker -->``."""
    pattern = rf"<!-- {marker}:? ?(\S*) -->\n```\w*\n(.*?)```"
    return re.findall(pattern, TUTORIAL.read_text(), flags=re.DOTALL)


def tiny(script: str) -> str:
    """The tutorial's commands with the tiny experiment and a short training run."""
    script = script.replace("punctuator.bible_en.transformer", "punctuator.bible_en.tiny")
    return re.sub(r"(seqlab .*? train .*?--logdir \S+)", rf"\1{TINY}", script, flags=re.DOTALL)


def test_quoted_code_is_the_code_in_examples() -> None:
    excerpts = marked_blocks("excerpt")
    assert len(excerpts) >= 4
    for path, code in excerpts:
        assert code in (REPO / path).read_text(), f"docs/tutorial.md quotes {path} wrongly"


@pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)
def test_tutorial_commands_run(tmp_path: Path) -> None:
    blocks = [code for _, code in marked_blocks("tutorial-test")]
    assert len(blocks) >= 6
    script = "set -euo pipefail\n" + "\n".join(tiny(block) for block in blocks)
    assert "punctuator.bible_en.tiny" in script and TINY in script
    (tmp_path / "examples").symlink_to(REPO / "examples")
    seqlab_bin = Path(sys.executable).parent
    env = dict(
        os.environ,
        SEQLAB_CACHE=str(tmp_path / "cache"),
        PATH=f"{seqlab_bin}{os.pathsep}{os.environ['PATH']}",
        OMP_NUM_THREADS="1",
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "punctuator.bible_en.transformer" in out  # seqlab list
    assert "[seqlab] decode test at step 30: punctuation_precision=" in out
    restored = out.strip().splitlines()[-1]
    assert restored.lower().replace(",", "").replace(".", "").replace(":", "").split() == (
        "and god said let there be light and there was light".split()
    )
    assert (tmp_path / "runs" / "punctuator" / "checkpoints").is_dir()
