"""``python -m seqlab``, which torchrun runs as ``torchrun ... -m seqlab train ...``."""

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from seqlab.cli import main

if __name__ == "__main__":
    # record: an uncaught exception on any rank reaches torchrun's failure report with its
    # traceback, and torchrun then stops the other ranks.
    sys.exit(record(main)())
