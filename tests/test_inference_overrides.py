"""``--set`` on eval, decode and infer (and ``Predictor.from_logdir(overrides=...)``): settings
that keep the model change what the command does; one that changes the model is refused."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT
from seqlab.export.predictor import Predictor
from seqlab.train.config_changes import ModelChangeError

pytestmark = pytest.mark.skipif(
    not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
    reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
)

SOURCES = ["In the beginning God created the heaven and the earth.", "And God said", "Amen"]
# Outputs of at most 0 tokens, whatever the source's length.
NO_TOKENS = [
    "--set",
    "task.beam_search.max_decode_length_ratio=0",
    "--set",
    "task.beam_search.max_decode_length_offset=0",
]


@pytest.fixture(scope="module")
def logdir(greedy_tiny_logdir: Path) -> Path:
    """transformer_tiny after 2 steps, greedy, outputs up to source length + 3 tokens."""
    return greedy_tiny_logdir


def run(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def test_infer_set_changes_the_decoding_length_bound(logdir: Path) -> None:
    text = "".join(f"{s}\n" for s in SOURCES)
    code, out, err = run(["infer", "--logdir", str(logdir)], text)
    assert code == 0, err
    assert len(out.splitlines()) == 3 and any(out.splitlines())  # the run's bound: > 0 tokens
    code, out, err = run(["infer", "--logdir", str(logdir), *NO_TOKENS], text)
    assert code == 0, err
    assert out.splitlines() == ["", "", ""]


def test_predictor_takes_overrides(logdir: Path) -> None:
    predictor = Predictor.from_logdir(logdir, overrides=["task.beam_search.beam_size=3"])
    assert predictor.context.task.config.beam_search.beam_size == 3
    assert Predictor.from_logdir(logdir).context.task.config.beam_search.beam_size == 1
    with pytest.raises(ModelChangeError, match=r"^task\.embedding\.vocab_size: 1000 -> 999 "):
        Predictor.from_logdir(logdir, overrides=["task.embedding.vocab_size=999"])


def test_decode_set_changes_the_decoding_length_bound(logdir: Path) -> None:
    code, out, err = run(["decode", "--logdir", str(logdir), *NO_TOKENS])
    assert code == 0, err
    hyps = (logdir / "decode_dev" / "hyps-00000002.txt").read_text().splitlines()
    assert hyps == ["", "", "", ""]


def test_a_named_decode_keeps_its_own_files(logdir: Path) -> None:
    assert run(["decode", "--logdir", str(logdir)])[0] == 0
    plain = (logdir / "decode_dev" / "hyps-00000002.txt").read_text()
    code, out, err = run(["decode", "--logdir", str(logdir), "--name", "short", *NO_TOKENS])
    assert code == 0, err
    assert (logdir / "decode_dev_short" / "hyps-00000002.txt").read_text() == "\n" * 4
    assert (logdir / "decode_dev" / "hyps-00000002.txt").read_text() == plain != "\n" * 4
    code, out, err = run(["eval", "--logdir", str(logdir), "--name", "a b"])
    assert code == 2 and len(err.splitlines()) == 1 and "--name may hold letters" in err


def test_eval_set_changes_the_data(logdir: Path) -> None:
    totals = []
    for limit in (4, 2):
        code, out, err = run(["eval", "--logdir", str(logdir), "--set", f"data.eval_limit={limit}"])
        assert code == 0, err
        metrics = json.loads((logdir / "eval_dev" / "metrics-00000002.json").read_text())
        totals.append(metrics["num_target_tokens"])
    assert totals[0] > totals[1] > 0


@pytest.mark.parametrize("command", ["infer", "eval", "decode"])
def test_a_setting_that_changes_the_model_is_refused_in_one_line(
    logdir: Path, command: str
) -> None:
    before = {p: p.read_bytes() for p in logdir.rglob("*") if p.is_file()}
    args = [command, "--logdir", str(logdir), "--set", "task.decoder.num_layers=1"]
    code, out, err = run(args, "In the beginning\n")
    assert code == 2 and "Traceback" not in err and out == ""
    assert err.startswith(f"seqlab {command}: error: task.decoder.num_layers: 2 -> 1 changes ")
    assert "only settings that keep the model (decoding, data, devices) can change" in err
    assert len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in logdir.rglob("*") if p.is_file()} == before


def test_an_artifact_takes_no_set(tmp_path: Path) -> None:
    code, _, err = run(["infer", "--artifact", str(tmp_path), "--set", "task.beam_size=2"])
    assert code == 2
    assert "an artifact's settings are fixed when exported; --set needs --logdir" in err


def test_export_set_is_what_the_artifact_decodes_with(logdir: Path, tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    code, _, err = run(
        ["export", "--logdir", str(logdir), "--format", "torch", "--out", str(artifact), *NO_TOKENS]
    )
    assert code == 0, err
    text = "".join(f"{s}\n" for s in SOURCES)
    code, out, err = run(["infer", "--artifact", str(artifact)], text)
    assert code == 0, err
    assert out.splitlines() == ["", "", ""]
    code, out, err = run(
        [
            "export",
            "--logdir",
            str(logdir),
            "--format",
            "torch",
            "--out",
            str(tmp_path / "other"),
            "--set",
            "task.decoder.num_layers=1",
        ]
    )
    assert code == 2 and len(err.splitlines()) == 1 and "task.decoder.num_layers" in err
