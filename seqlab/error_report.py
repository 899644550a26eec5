"""How the ``seqlab`` command reports a failure: a user error in one line, an unexpected
error in one line plus the file that holds its traceback, and under torchrun each distinct
message once for the whole job rather than once per rank."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from seqlab.core.config import ConfigError
from seqlab.core.registry import UnknownExperimentError


class UsageError(RuntimeError):
    """A problem with what the user asked for; printed without a traceback."""


# Exit codes: 2 for a usage or config error, 1 for any other error (both printed).
USAGE_ERRORS = (ConfigError, UnknownExperimentError, UsageError)


def is_user_error(error: BaseException) -> bool:
    """Whether ``error``'s message is meant for the user: a usage or config error, seqlab's
    own file, data, checkpoint and device errors (they name the file, line, key or command to
    run), or an operating-system error on a file (permission denied, disk full)."""
    if isinstance(error, (*USAGE_ERRORS, OSError)):
        return True
    seqlab_error = type(error).__module__.startswith("seqlab")
    return seqlab_error and isinstance(error, ValueError | RuntimeError | KeyError)


def user_message(error: BaseException) -> str:
    """``error``'s message on one line."""
    if isinstance(error, OSError) and error.strerror and type(error).__module__ == "builtins":
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return " ".join(str(error).split("\n")) or type(error).__name__


def write_traceback(error: BaseException, logdir: str = "") -> Path:
    """Writes ``error``'s traceback to ``logdir/errors/`` when ``logdir`` is a directory,
    else to a temporary file; returns the file."""
    text = "".join(traceback.format_exception(error))
    name = f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    if logdir and Path(logdir).is_dir():
        path = Path(logdir) / "errors" / name
        try:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            pass  # a read-only logdir: a temporary file then
    fd, temp = tempfile.mkstemp(prefix="seqlab-", suffix=f"-{name}")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(temp)


def _job_reports() -> Path | None:
    """The directory where the ranks of this torchrun job mark the errors they printed
    (None outside a multi-process job)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or os.environ.get("WORLD_SIZE", "1") == "1":
        return None
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"seqlab-job-{digest}"


def print_once_per_job(line: str) -> None:
    """Prints ``line`` to stderr, once per torchrun job: the first rank to report a message
    prints it, the others (with the same message) stay silent."""
    reports = _job_reports()
    if reports is not None:
        try:
            reports.mkdir(exist_ok=True)
            marker = reports / hashlib.sha256(line.encode()).hexdigest()[:24]
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        except OSError:
            pass  # no shared temporary directory: print it
    print(line, file=sys.stderr, flush=True)


def report(command: str, error: BaseException, logdir: str = "") -> int:
    """Prints ``error`` for ``seqlab COMMAND`` in one line; returns the exit code."""
    world_size = os.environ.get("WORLD_SIZE", "1")
    rank = f" (rank {os.environ.get('RANK', '?')} of {world_size})" if world_size != "1" else ""
    if is_user_error(error):
        # The rank is left out of the line so that ranks with the same error print it once.
        print_once_per_job(f"seqlab {command}: error: {user_message(error)}")
        return 2 if isinstance(error, USAGE_ERRORS) else 1
    path = write_traceback(error, logdir)
    reports = _job_reports()
    if reports is not None and reports.is_dir() and any(reports.iterdir()):
        return 1  # another rank printed the job's error; this one is its echo (a lost peer)
    first = (str(error).splitlines() or [""])[0]
    print(
        f"seqlab {command}{rank}: internal error: {type(error).__name__}: {first} "
        f"(full traceback in {path})",
        file=sys.stderr,
        flush=True,
    )
    return 1
