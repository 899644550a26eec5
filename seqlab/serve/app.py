"""The HTTP application of ``seqlab serve`` (Starlette, run by uvicorn).

Endpoints:
  POST /v1/translate | /v1/generate | /v1/transcribe   the model's task (one of them), JSON
      in ({"text": ...}, or {"audio": base64 of a WAV/FLAC file}) and out ({"output": ...,
      "decode_ms": ..., "batch_size": ...}); a translation request may ask for
      "attention": true and gets the source attention as well.
  GET /health, GET /v1/model (experiment, step, config digest, device, limits),
  GET /metrics (Prometheus), GET / (the demo page).

Every refused request gets a 4xx (or 503, 504) with {"error": one line}; the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from seqlab.error_report import is_user_error, user_message
from seqlab.export.input_limits import InputTooLargeError
from seqlab.serve.dynamic_batcher import DynamicBatcher, QueueFullError
from seqlab.serve.served_model import TRANSCRIBE, RequestError, ServedModel
from seqlab.serve.server_metrics import CONTENT_TYPE_LATEST, ServerMetrics

log = logging.getLogger(__name__)

TASK_ENDPOINTS = ("translate", "generate", "transcribe")


@dataclasses.dataclass
class ServeSettings:
    """How the server batches and what it refuses."""

    batch_window_ms: float = 5.0
    max_batch_tokens: int = 8192
    max_queue: int = 256
    request_timeout_s: float = 60.0
    max_body_bytes: int = 1 << 20

    def check(self) -> None:
        """Raises ValueError naming the flag of a setting out of range."""
        if self.batch_window_ms < 0:
            raise ValueError(f"--batch-window-ms must be at least 0, got {self.batch_window_ms}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"--request-timeout must be above 0, got {self.request_timeout_s}")
        for flag, value in (
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-queue", self.max_queue),
            ("--max-body-bytes", self.max_body_bytes),
        ):
            if value < 1:
                raise ValueError(f"{flag} must be at least 1, got {value}")


def build_app(
    model: ServedModel, settings: ServeSettings, executor: ThreadPoolExecutor | None = None
) -> Starlette:
    """The application serving ``model``; ``executor`` is the decoding thread (see
    ``DynamicBatcher``)."""
    settings.check()
    batcher = DynamicBatcher(
        model.run,
        window_s=settings.batch_window_ms / 1000.0,
        # A language model that samples decodes each prompt alone (see ServedModel.batches).
        max_batch_size=model.max_batch_size if model.batches else 1,
        max_batch_cost=settings.max_batch_tokens,
        max_queue=settings.max_queue,
        executor=executor,
    )
    metrics = ServerMetrics(lambda: batcher.queue_depth)
    batcher.on_batch = metrics.observe_batch

    def observed(
        endpoint: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as error:  # a bug, not the request: one line out, traceback logged
                log.error("request to %s failed", request.url.path, exc_info=error)
                response = _error(500, f"internal error: {user_message(error)}")
            metrics.observe_request(endpoint, response.status_code, time.perf_counter() - started)
            return response

        return answer

    async def decode(request: Request) -> Response:
        endpoint = request.path_params["task"]
        if endpoint != model.task:
            return _error(404, f"this model answers POST /v1/{model.task}, not POST /v1/{endpoint}")
        try:
            body = await _read_body(request, settings.max_body_bytes)
            prepared = model.prepare(_parse_json(body))
        except RequestError as e:
            return _error(e.status, str(e))
        try:
            future = batcher.submit(prepared.item, prepared.cost)
        except QueueFullError as e:
            return _error(503, f"server busy: {e}; retry later")
        try:
            result = await asyncio.wait_for(asyncio.shield(future), settings.request_timeout_s)
        except TimeoutError:
            future.cancel()
            return _error(
                504, f"not decoded within {settings.request_timeout_s:g} s (--request-timeout)"
            )
        if isinstance(result.output, Exception):
            return _decode_error(result.output)
        answer: dict[str, Any] = {
            "output": result.output,
            "decode_ms": round(result.decode_seconds * 1000.0, 2),
            "batch_size": result.batch_size,
        }
        if prepared.attention:
            answer["attention"] = await batcher.run_alone(
                model.attention, prepared.item, result.output
            )
        return JSONResponse(answer)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def describe(request: Request) -> Response:
        limits = {
            "max_batch_size": model.max_batch_size if model.batches else 1,
            "max_body_bytes": settings.max_body_bytes,
        }
        if model.task != TRANSCRIBE:
            limits["max_input_tokens"] = int(model.predictor.max_input_tokens)
        return JSONResponse(
            {
                **model.description,
                "endpoint": f"/v1/{model.task}",
                "input_key": model.input_key,
                "limits": limits,
                "settings": dataclasses.asdict(settings),
            }
        )

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def demo_page(request: Request) -> Response:
        page = resources.files("seqlab.serve").joinpath("demo_page.html").read_text()
        return HTMLResponse(page)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        yield
        # uvicorn has answered every request it accepted before it shuts the application down.
        await batcher.stop()
        print("[seqlab] server stopped", flush=True)

    routes = [
        Route("/v1/{task}", observed("decode", decode), methods=["POST"]),
        Route("/health", observed("health", health), methods=["GET"]),
        Route("/v1/model", observed("model", describe), methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/", observed("demo", demo_page), methods=["GET"]),
    ]

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        what = "no such endpoint" if error.status_code == 404 else error.detail
        return _error(error.status_code, f"{what}: {request.method} {request.url.path}")

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused past ``limit`` bytes (by its Content-Length or as it streams)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            f"body of {declared} bytes; the limit is {limit} (--max-body-bytes)", 413
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"body over {limit} bytes (--max-body-bytes)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    """The JSON value of a UTF-8 body.

    Raises:
      RequestError: an empty body, bytes that are not UTF-8, or text that is not JSON.
    """
    if not body.strip():
        raise RequestError("empty body; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"the body is not UTF-8 (byte {e.start}: {e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _decode_error(error: Exception) -> JSONResponse:
    """A 413/400 for an input the predictor refused; a 500 (logged with its traceback) else."""
    if isinstance(error, InputTooLargeError):
        return _error(413, user_message(error))
    if is_user_error(error):
        return _error(400, user_message(error))
    log.error("decoding failed", exc_info=error)
    return _error(500, f"internal error: {user_message(error)}")
