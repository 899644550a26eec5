"""Runs the application with uvicorn on a socket bound here, so ``--port 0`` works and the
line that announces the server names the port it really has."""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import uvicorn

from seqlab.serve.app import ServeSettings, build_app
from seqlab.serve.served_model import ServedModel


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
      OSError: the address is taken or cannot be bound (the caller names the flag).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    # Listening now, so that connections made as soon as the address is printed wait in the
    # backlog until uvicorn accepts them instead of being refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    load_model: Callable[[], ServedModel],
    settings: ServeSettings,
    host: str,
    port: int,
    access_log: bool = False,
) -> None:
    """Loads the model with ``load_model`` and serves it until SIGINT or SIGTERM; then it
    stops accepting connections, answers every request it has accepted, and returns.

    The model is loaded on the thread that will decode with it, and torch runs on no other:
    a second thread calling torch brings a second OpenMP thread team, and on 2 cores the two
    teams made every decode about 2x slower (docs/serving.md).
    """
    executor = ThreadPoolExecutor(1, thread_name_prefix="seqlab-decode")
    try:
        model = executor.submit(load_model).result()
    except BaseException:
        executor.shutdown(wait=False)
        raise
    app = build_app(model, settings, executor)
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    description = model.description
    print(
        f"[seqlab] serving {description.get('experiment')} (step {description.get('step')}, "
        f"{description['device']}) at http://{shown_host}:{bound_port}/ : "
        f"POST /v1/{model.task}, GET /health, /v1/model, /metrics",
        flush=True,
    )
    config = uvicorn.Config(
        app, log_level="warning", access_log=access_log, timeout_graceful_shutdown=None
    )
    uvicorn.Server(config).run(sockets=[sock])
