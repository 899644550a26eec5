"""``seqlab serve`` as a user starts it: it announces its address, answers, and on SIGTERM
answers every request it had accepted before it exits; bad flags are one line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serve_helpers import TEXTS

from seqlab.cli import main
from seqlab.serve.http_server import bind_socket


def start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Starts ``seqlab serve ARGS --port 0``; returns the process and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "seqlab", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
    assert found, line + process.stderr.read() if process.stderr else line
    return process, found.group(1)


def test_sigterm_answers_every_accepted_request(greedy_tiny_logdir: Path) -> None:
    # A 2-second batch window: the requests are accepted and waiting when SIGTERM arrives.
    process, url = start(["--logdir", str(greedy_tiny_logdir), "--batch-window-ms", "2000"])
    try:
        assert httpx.get(f"{url}/health").status_code == 200

        async def requests_then_sigterm() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                posts = [
                    asyncio.create_task(client.post(f"{url}/v1/translate", json={"text": t}))
                    for t in TEXTS
                ]
                await asyncio.sleep(0.5)
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*posts)

        answers = asyncio.run(requests_then_sigterm())
        assert [a.status_code for a in answers] == [200] * len(TEXTS)
        assert all(a.json()["batch_size"] == len(TEXTS) for a in answers)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode in (0, -signal.SIGTERM), err
    assert "[seqlab] server stopped" in out
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "70000"], "--port must be 0..65535, got 70000"),
        (["--max-queue", "0"], "--max-queue must be at least 1, got 0"),
        (["--request-timeout", "0"], "--request-timeout must be above 0, got 0.0"),
        (["--artifact", "x"], "pass either --logdir (a training run) or --artifact"),
    ],
)
def test_bad_flags_are_one_line(
    greedy_tiny_logdir: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--logdir", str(greedy_tiny_logdir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_taken_port_is_one_line(
    greedy_tiny_logdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = bind_socket("127.0.0.1", 0)
    taken.listen()
    port = taken.getsockname()[1]
    try:
        assert main(["serve", "--logdir", str(greedy_tiny_logdir), "--port", str(port)]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert f"--host 127.0.0.1 --port {port}: Address already in use" in err
    assert err.count("\n") == 1, err
