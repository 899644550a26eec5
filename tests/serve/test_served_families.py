"""seqlab serve with every family it loads: language models (greedy ones batched, sampling
ones one prompt at a time), speech recognizers (Conformer-CTC and LAS, audio as base64),
and exported artifacts; each response equals its input decoded alone."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from serve_helpers import TEXTS, running

from seqlab.export.artifact_predictor import ArtifactPredictor
from seqlab.export.exporter import export_artifact
from seqlab.export.predictor import Predictor
from seqlab.serve.served_model import ServedModel

pytestmark = pytest.mark.slow  # trains a tiny LM and a tiny LAS, exports an artifact


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(client.post(url, json=body) for body in bodies))


def served_outputs(model: ServedModel, bodies: list[dict], window_ms: float = 300) -> list[dict]:
    with running(model, batch_window_ms=window_ms) as url:
        answers = asyncio.run(post_all(f"{url}/v1/{model.task}", bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    return [a.json() for a in answers]


@pytest.fixture(scope="module")
def lm_logdir(two_step_run_sets: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seqlab.cli import main

    logdir = tmp_path_factory.mktemp("lm")
    sets = [*two_step_run_sets, "task.sampler.max_new_tokens=8"]
    args = ["train", "--experiment", "lm.bible_en.transformer_tiny", "--logdir", str(logdir)]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    return logdir


@pytest.mark.parametrize("temperature, batched", [(0.0, True), (1.0, False)])
def test_a_language_model_continues_prompts(
    lm_logdir: Path, temperature: float, batched: bool
) -> None:
    predictor = Predictor.from_logdir(
        lm_logdir, overrides=[f"task.sampler.temperature={temperature}"]
    )
    model = ServedModel(predictor)
    assert (model.task, model.batches) == ("generate", batched)
    alone = [predictor.predict([text])[0] for text in TEXTS]
    answers = served_outputs(model, [{"text": text} for text in TEXTS])
    assert [a["output"] for a in answers] == alone
    assert (max(a["batch_size"] for a in answers) > 1) == batched


def wav_base64(tiny_speech_corpus: dict[str, Path], count: int) -> list[str]:
    manifest = tiny_speech_corpus["test"]
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:count]
    return [
        base64.b64encode((manifest.parent / row["audio"]).read_bytes()).decode() for row in rows
    ]


@pytest.fixture(scope="module")
def las_logdir(
    tiny_speech_run: Callable[[str, Path, list[str]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    return tiny_speech_run("asr.flite_bible.las_tiny", tmp_path_factory.mktemp("las") / "r", [])


@pytest.mark.parametrize("family", ["ctc", "las"])
def test_a_speech_model_transcribes_base64_audio(
    family: str,
    ctc_tiny_logdir: Path,
    request: pytest.FixtureRequest,
    tiny_speech_corpus: dict[str, Path],
) -> None:
    logdir = ctc_tiny_logdir if family == "ctc" else request.getfixturevalue("las_logdir")
    predictor = Predictor.from_logdir(logdir)
    model = ServedModel(predictor)
    assert model.task == "transcribe"
    audios = wav_base64(tiny_speech_corpus, 4)
    alone = [model.run([model.prepare({"audio": a}).item])[0] for a in audios]
    answers = served_outputs(model, [{"audio": a} for a in audios])
    assert [a["output"] for a in answers] == alone
    assert max(a["batch_size"] for a in answers) > 1


@pytest.mark.parametrize(
    "audio, reason",
    [
        ("not base64!", "'audio' is not base64"),
        (base64.b64encode(b"RIFF not really a wav file").decode(), "unreadable 'audio'"),
    ],
)
def test_audio_that_is_not_audio_is_a_400(ctc_tiny_logdir: Path, audio: str, reason: str) -> None:
    model = ServedModel(Predictor.from_logdir(ctc_tiny_logdir))
    with running(model) as url:
        answer = httpx.post(f"{url}/v1/transcribe", json={"audio": audio}, timeout=60)
        assert answer.status_code == 400 and reason in answer.json()["error"]
        refused = httpx.post(f"{url}/v1/transcribe", json={"text": "hello"}, timeout=60)
        assert refused.json()["error"] == "unknown key 'text'; this endpoint takes audio"


def test_an_artifact_is_served(greedy_tiny_logdir: Path, tmp_path: Path) -> None:
    # (A speech artifact transcribes through the same transcribe_waveforms as its logdir:
    # tests/export/test_speech_artifacts.py.)
    mt = ServedModel(
        ArtifactPredictor(export_artifact(greedy_tiny_logdir, tmp_path / "mt", "torch"))
    )
    assert (mt.task, mt.description["step"], mt.description["format"]) == ("translate", 2, "torch")
    alone = [mt.predictor.predict([text])[0] for text in TEXTS]
    assert [a["output"] for a in served_outputs(mt, [{"text": t} for t in TEXTS])] == alone
    with running(mt) as url:
        answer = httpx.post(f"{url}/v1/translate", json={"text": "God", "attention": True})
    assert answer.status_code == 400 and "cannot show its attention" in answer.json()["error"]
