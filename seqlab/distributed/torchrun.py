"""``python -m seqlab.distributed.torchrun ARGS``: torchrun (same arguments) for
``seqlab train --nproc``, without torchrun's report of a worker that failed with seqlab's
own one-line error (exit code 1 or 2), so that a user error reads as one line, not a
traceback per rank; any other failure (a crash, a signal) keeps torchrun's report.
"""

from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

# Exit codes of seqlab.cli.main after it printed its error (2: usage, 1: any other).
REPORTED_EXIT_CODES = (1, 2)


def main(argv: list[str]) -> int:
    """Runs torchrun with ``argv``; returns the job's exit code."""
    elastic = [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]
    try:
        for name in elastic:  # its log lines about the failed worker and the others' SIGTERM
            logging.getLogger(name).setLevel(logging.CRITICAL)
        run(parse_args(argv))
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        if failure.exitcode in REPORTED_EXIT_CODES:
            return failure.exitcode
        print(e.format_msg(), file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
