"""Conformer-CTC artifacts end to end: a 2-step run on the tiny flite corpus is exported, and
``seqlab infer --artifact`` prints the transcripts ``seqlab infer --logdir`` prints, with
greedy and prefix beam search (torch) and greedy (ONNX); bad audio input is one line; LAS is
refused in one line."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from seqlab.cli import main
from seqlab.data.audio_files import pad_waveforms, read_audio, write_wav
from seqlab.export.artifact import ArtifactError
from seqlab.export.artifact_predictor import ArtifactPredictor
from seqlab.export.exporter import export_artifact

pytestmark = pytest.mark.slow  # trains two tiny speech models and traces one five times


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def ctc_logdir(ctc_tiny_logdir: Path) -> Path:
    return ctc_tiny_logdir


@pytest.fixture(scope="module")
def wavs(tiny_speech_corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Three test utterances of different lengths, and a 50 ms cut of the first (shorter than
    the fewest samples the program takes)."""
    manifest = tiny_speech_corpus["test"]
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    paths = [manifest.parent / row["audio"] for row in rows[:3]]
    short = tmp_path_factory.mktemp("short") / "short.wav"
    write_wav(short, read_audio(paths[0], 16000)[:800], 16000)
    return [str(p) for p in paths], str(short)


def transcripts(source: list[str], inputs: list[str], sets: list[str] = ()) -> str:
    overrides = [a for s in sets for a in ("--set", s)]
    code, out, err = run(["infer", *source, "--input", *inputs, *overrides])
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == inputs
    return out


@pytest.mark.parametrize(
    "format, decoder", [("torch", "greedy"), ("torch", "beam"), ("onnx", "greedy")]
)
def test_artifact_transcribes_as_the_logdir_does(
    ctc_logdir: Path, wavs: tuple[list[str], str], format: str, decoder: str, tmp_path: Path
) -> None:
    files, short = wavs
    artifact = tmp_path / "artifact"
    sets = [f"task.decoder={decoder}"]
    args = ["export", "--logdir", str(ctc_logdir), "--format", format, "--out", str(artifact)]
    code, _, err = run(args + ["--set", sets[0]])
    assert code == 0, err
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["ctc_search"]["decoder"] == decoder
    assert 0 < manifest["limits"]["min_samples"] < 2000 < manifest["limits"]["max_samples"]
    # The short file alone is padded to the program's fewest samples.
    for inputs in (files, [short]):
        from_logdir = transcripts(["--logdir", str(ctc_logdir)], inputs, sets)
        from_artifact = transcripts(["--artifact", str(artifact), "--device", "cpu"], inputs)
        assert from_artifact == from_logdir
        if inputs == files:
            # The barely trained model emits many labels: this compares no empty lines.
            assert all(line.split("\t")[1] for line in from_logdir.splitlines())


def test_bad_audio_input_is_one_line(
    ctc_logdir: Path, wavs: tuple[list[str], str], tmp_path: Path
) -> None:
    artifact = tmp_path / "artifact"
    args = ["export", "--logdir", str(ctc_logdir), "--format", "torch", "--out", str(artifact)]
    assert run(args)[0] == 0
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio\n")
    # A lower limit than the program's (the manifest is not among the checksummed files).
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["limits"]["max_samples"] = 8000
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    for inputs, message in (
        ([str(tmp_path / "missing.wav")], "audio file not found"),
        ([wavs[0][0], str(not_audio)], f"unreadable audio file {not_audio}"),
        ([], "this model transcribes audio: pass --input a.wav"),
        ([wavs[1], wavs[0][0]], f"audio file {wavs[0][0]} is "),
    ):
        code, out, err = run(["infer", "--artifact", str(artifact), "--input", *inputs])
        assert code in (1, 2) and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err and not out


def test_onnx_int8_keeps_the_front_end_float(
    ctc_logdir: Path, wavs: tuple[list[str], str], tmp_path: Path
) -> None:
    """The best label of nearly every frame is fp32's (about half of them with the filterbank's
    MatMul quantized too)."""
    best = []
    for format, quantize in (("torch", "none"), ("onnx", "int8")):
        artifact = export_artifact(ctc_logdir, tmp_path / format, format, quantize)
        predictor = ArtifactPredictor(artifact)
        with pytest.raises(ArtifactError, match="holds a speech model: call transcribe"):
            predictor.predict(["text"])
        audio, paddings = pad_waveforms([read_audio(Path(p), 16000) for p in wavs[0]])
        log_probs, frame_paddings = predictor.recognizer(audio, paddings)
        best.append(log_probs.argmax(-1)[frame_paddings == 0])
    assert (best[0] == best[1]).float().mean() > 0.9


def test_las_is_refused_in_one_line(
    tiny_speech_run: Callable[[str, Path, list[str]], Path], tmp_path: Path
) -> None:
    logdir = tiny_speech_run("asr.flite_bible.las_tiny", tmp_path / "run", [])
    for format in ("torch", "onnx"):
        out = tmp_path / format
        args = ["export", "--logdir", str(logdir), "--format", format, "--out", str(out)]
        code, _, err = run(args)
        assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
        assert "cannot export ListenAttendSpell (its bidirectional LSTM encoder" in err
        assert not out.exists()
