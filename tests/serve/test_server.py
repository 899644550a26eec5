"""seqlab serve over real HTTP with a translation model: every endpoint, batching that
changes no output, each kind of bad request, the queue limit and the request timeout."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_helpers import TEXTS, running

from seqlab.serve.served_model import ServedModel


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """POSTs every body at once (one connection each)."""
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(client.post(url, json=body) for body in bodies))


def test_every_endpoint(beam_mt: ServedModel, greedy_tiny_logdir: Path) -> None:
    expected = beam_mt.predictor.predict([TEXTS[1]])[0]
    with running(beam_mt) as url:
        answer = httpx.post(f"{url}/v1/translate", json={"text": TEXTS[1]}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"] == expected
        assert answer.json()["batch_size"] == 1 and answer.json()["decode_ms"] > 0
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        model = httpx.get(f"{url}/v1/model").json()
        assert model["experiment"] == "mt.bible_en_es.transformer_tiny"
        assert (model["task"], model["step"], model["device"]) == ("translate", 2, "cpu")
        assert (model["endpoint"], model["input_key"]) == ("/v1/translate", "text")
        # config.json of the run holds the same config (BEAM_4 changes decoding only, which
        # the digest includes: it is the served config).
        assert len(model["config_sha256"]) == 64
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "seqlab serve" in page.text
        metrics = httpx.get(f"{url}/metrics").text
    assert 'seqlab_requests_total{endpoint="decode",status="200"} 1.0' in metrics
    assert "seqlab_batch_size_count 1.0" in metrics
    assert 'seqlab_request_latency_seconds_count{endpoint="decode"} 1.0' in metrics
    assert "seqlab_queue_depth 0.0" in metrics


def test_the_digest_is_that_of_the_runs_config_json(greedy_tiny_logdir: Path) -> None:
    from seqlab.export.predictor import Predictor

    model = ServedModel(Predictor.from_logdir(greedy_tiny_logdir))
    expected = hashlib.sha256((greedy_tiny_logdir / "config.json").read_bytes()).hexdigest()
    assert model.description["config_sha256"] == expected


def test_concurrent_requests_share_batches_and_each_gets_its_input_decoded_alone(
    beam_mt: ServedModel,
) -> None:
    alone = [beam_mt.predictor.predict([text])[0] for text in TEXTS]
    with running(beam_mt, batch_window_ms=300) as url:
        answers = asyncio.run(post_all(f"{url}/v1/translate", [{"text": t} for t in TEXTS]))
    assert [a.status_code for a in answers] == [200] * len(TEXTS)
    assert [a.json()["output"] for a in answers] == alone
    assert max(a.json()["batch_size"] for a in answers) > 1


def test_the_attention_picture(beam_mt: ServedModel) -> None:
    with running(beam_mt) as url:
        answer = httpx.post(
            f"{url}/v1/translate", json={"text": TEXTS[2], "attention": True}, timeout=60
        ).json()
    attention = answer["attention"]
    assert attention["source"][-1] == attention["output"][-1] == "</s>"
    weights = attention["weights"]
    assert len(weights) == len(attention["output"])
    for row in weights:
        assert len(row) == len(attention["source"])
        assert sum(row) == pytest.approx(1.0, abs=1e-2)


LONG_TEXT = " ".join(["light"] * 300)


@pytest.fixture(scope="module")
def small_body_server(beam_mt: ServedModel) -> Iterator[str]:
    """One server for the bad requests, with a body limit of 4096 bytes."""
    with running(beam_mt, max_body_bytes=4096) as url:
        yield url


@pytest.mark.parametrize(
    "body, status, reason",
    [
        (b"{not json", 400, "invalid JSON: Expecting property name"),
        (b"", 400, "empty body"),
        (b'["a"]', 400, "must be a JSON object, got an array"),
        (b'{"text": 3}', 400, "'text' must be a string, got a number"),
        (b'{"text": null}', 400, "'text' must be a string, got null"),
        (b'{"txt": "a"}', 400, "unknown key 'txt'; this endpoint takes attention, text"),
        (b"{}", 400, "missing key 'text'"),
        (b'{"text": "  "}', 400, "'text' is empty"),
        (b'{"text": "a", "attention": "yes"}', 400, "'attention' must be true or false"),
        (b'{"text": "a\\u0007b"}', 400, "control character"),
        (b'{"text": "caf\xe9"}', 400, "not UTF-8 (byte 13: invalid continuation byte)"),
        (json.dumps({"text": LONG_TEXT}).encode(), 413, "the limit is 256"),
        (json.dumps({"text": "x" * 5000}).encode(), 413, "--max-body-bytes"),
    ],
)
def test_bad_requests_get_a_one_line_4xx_and_the_server_goes_on(
    small_body_server: str, body: bytes, status: int, reason: str
) -> None:
    url = small_body_server
    answer = httpx.post(f"{url}/v1/translate", content=body, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert reason in error and "\n" not in error
    assert httpx.post(f"{url}/v1/translate", json={"text": "God"}, timeout=60).is_success


def test_other_endpoints_and_methods_are_a_json_4xx(beam_mt: ServedModel) -> None:
    with running(beam_mt) as url:
        answer = httpx.post(f"{url}/v1/transcribe", json={"audio": "AAAA"})
        unknown = httpx.get(f"{url}/v2/anything")
        wrong_method = httpx.get(f"{url}/v1/translate")
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"error": "no such endpoint: GET /v2/anything"},
    )
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "Method Not Allowed: GET /v1/translate"}
    assert answer.status_code == 404
    assert (
        answer.json()["error"] == "this model answers POST /v1/translate, not POST /v1/transcribe"
    )


def test_a_full_queue_answers_503_and_a_late_decode_504(beam_mt: ServedModel) -> None:
    # The first two requests wait out a 1.5 s window and time out at 0.5 s; the third finds
    # the queue (2) full.
    settings = {"batch_window_ms": 1500, "max_queue": 2, "request_timeout_s": 0.5}
    with running(beam_mt, **settings) as url:
        answers = asyncio.run(post_all(f"{url}/v1/translate", [{"text": t} for t in TEXTS[:3]]))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [503, 504, 504], [a.text for a in answers]
        errors = {a.status_code: a.json()["error"] for a in answers}
        assert errors[503] == "server busy: 2 requests are waiting (--max-queue); retry later"
        assert errors[504] == "not decoded within 0.5 s (--request-timeout)"
        metrics = httpx.get(f"{url}/metrics").text
    assert 'seqlab_requests_total{endpoint="decode",status="503"} 1.0' in metrics


def test_a_failing_decode_is_a_one_line_500_and_the_server_goes_on(
    beam_mt: ServedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = beam_mt.run

    def fails_on_light(items: list[str]) -> list[str]:
        if any("light" in item for item in items):
            raise RuntimeError("out of memory\nsecond line")
        return run(items)

    monkeypatch.setattr(beam_mt, "run", fails_on_light)
    with running(beam_mt, batch_window_ms=300) as url:
        failed, fine = asyncio.run(
            post_all(f"{url}/v1/translate", [{"text": TEXTS[2]}, {"text": TEXTS[3]}])
        )
    assert (failed.status_code, failed.json()) == (
        500,
        {"error": "internal error: out of memory second line"},
    )
    assert fine.status_code == 200 and fine.json()["output"] == run([TEXTS[3]])[0]
