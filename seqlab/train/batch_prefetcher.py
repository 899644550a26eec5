"""Batches made ahead of the training step on a background thread.

Getting the next global batch from the stream and collating this rank's slice is Python and
NumPy work that would otherwise sit between two training steps (and starve a GPU). The
thread makes up to ``depth`` items ahead; each item carries the stream position after it, so
the trainer checkpoints the position of what it consumed, not of what was made ahead, and a
resume stays exact.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")

_POLL_SECONDS = 0.1


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BatchPrefetcher(Generic[Item]):
    """Calls ``make()`` ahead of time on a thread (or, with ``depth == 0``, on each ``next``).

    ``next()`` returns the items in order, raising on this thread any exception ``make``
    raised; ``wait_seconds`` adds up the time ``next()`` spent waiting for them.
    """

    def __init__(self, make: Callable[[], Item], depth: int) -> None:
        if depth < 0:
            raise ValueError(f"trainer.prefetch_batches must be >= 0, got {depth}")
        self._make = make
        self.wait_seconds = 0.0
        self._queue: queue.Queue[Item | _Failure] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name="seqlab-prefetch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item: Item | _Failure = self._make()
            except BaseException as e:  # handed to the training thread, which raises it
                item = _Failure(e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_SECONDS)
                    break
                except queue.Full:
                    continue
            if isinstance(item, _Failure):
                return

    def next(self) -> Item:
        start = time.perf_counter()
        try:
            if self._thread is None:
                return self._make()
            item = self._queue.get()
            if isinstance(item, _Failure):
                raise item.error
            return item
        finally:
            self.wait_seconds += time.perf_counter() - start

    def close(self) -> None:
        """Stops the thread; items made ahead are dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
