"""A real server for the serve tests: uvicorn on a free local port, in a thread of the test
process (the CLI tests start ``seqlab serve`` as a process instead); the texts they send."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import uvicorn

from seqlab.serve.app import ServeSettings, build_app
from seqlab.serve.http_server import bind_socket
from seqlab.serve.served_model import ServedModel

# Sentences of very different lengths (2 to 40 words).
TEXTS = [
    "God",
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light: and there was light.",
    "Jesus wept.",
    "And the earth was without form, and void; and darkness was upon the face of the deep. "
    "And the Spirit of God moved upon the face of the waters, and it was good in his sight.",
    "Let us make man in our image.",
]

BEAM_4 = ["task.beam_search.beam_size=4", "task.beam_search.max_decode_length_offset=6"]


@contextlib.contextmanager
def running(model: ServedModel, **settings: float) -> Iterator[str]:
    """Serves ``model`` on a free port of 127.0.0.1 until the block ends; yields its URL."""
    app = build_app(model, ServeSettings(**settings))  # type: ignore[arg-type]
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
