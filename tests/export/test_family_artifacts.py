"""Every exportable family beyond TransformerMT end to end: a 2-step run of the hybrid MT and
of both language models is exported, and ``seqlab infer --artifact`` prints what ``seqlab infer
--logdir`` prints (greedy decoding); RNMT+ and the formats that cannot express a model are
refused in one line."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.data.corpora.sword import DEFAULT_SWORD_ROOT

pytestmark = [
    pytest.mark.slow,  # trains three tiny runs and traces their programs
    pytest.mark.skipif(
        not (DEFAULT_SWORD_ROOT / "mods.d").is_dir(),
        reason="Bible SWORD modules not installed (scripts/setup.sh installs them)",
    ),
]

GREEDY = {
    "mt": [
        "task.beam_search.beam_size=1",
        "task.beam_search.max_decode_length_ratio=1.0",
        "task.beam_search.max_decode_length_offset=5",
    ],
    "lm": ["task.sampler.temperature=0.0", "task.sampler.max_new_tokens=8"],
}
TEXTS = ["In the beginning God created", "And the earth was without form", "Let there be light"]


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def train(experiment: str, logdir: Path, run_sets: list[str]) -> Path:
    sets = [*run_sets, *GREEDY[experiment.split(".")[0]]]
    args = ["train", "--experiment", experiment, "--logdir", str(logdir)]
    code, _, err = run(args + [a for s in sets for a in ("--set", s)])
    assert code == 0, err
    return logdir


@pytest.mark.parametrize(
    "experiment, format",
    [
        ("mt.bible_en_es.hybrid_tiny", "torch"),
        ("lm.bible_en.transformer_tiny", "torch"),
        ("lm.bible_en.lstm_tiny", "torch"),
        ("lm.bible_en.lstm_tiny", "onnx"),
        ("mt.bible_en_es.hybrid_tiny", "onnx"),
        ("lm.bible_en.transformer_tiny", "onnx"),
    ],
)
def test_infer_from_the_artifact_prints_what_the_logdir_prints(
    experiment: str, format: str, two_step_run_sets: list[str], tmp_path: Path
) -> None:
    logdir = train(experiment, tmp_path / "run", two_step_run_sets)
    artifact = tmp_path / "artifact"
    code, _, err = run(
        ["export", "--logdir", str(logdir), "--format", format, "--out", str(artifact)]
    )
    assert code == 0, err
    prompts = [a for text in TEXTS for a in ("--prompt", text)]
    code, from_logdir, err = run(["infer", "--logdir", str(logdir), *prompts])
    assert code == 0, err
    assert len(from_logdir.splitlines()) == len(TEXTS) and from_logdir.strip()
    args = ["infer", "--artifact", str(artifact), "--device", "cpu", *prompts]
    code, from_artifact, err = run(args)
    assert code == 0, err
    assert from_artifact == from_logdir


@pytest.mark.parametrize(
    "experiment, format, message",
    [
        ("mt.bible_en_es.rnmt_tiny", "torch", "RNMTPlusMT with an LSTM encoder"),
        ("mt.bible_en_es.hybrid_tiny", "ctranslate2", "cannot express RNMTPlusMT"),
    ],
)
def test_export_refuses_what_a_format_cannot_express_in_one_line(
    experiment: str, format: str, message: str, two_step_run_sets: list[str], tmp_path: Path
) -> None:
    logdir = train(experiment, tmp_path / "run", two_step_run_sets)
    artifact = tmp_path / "artifact"
    code, _, err = run(
        ["export", "--logdir", str(logdir), "--format", format, "--out", str(artifact)]
    )
    assert code == 1
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not artifact.exists()
