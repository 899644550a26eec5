"""Dynamic batching: requests that arrive within a short window are decoded together.

The first request of a batch waits at most ``window_s`` for company; a batch closes early
when the next request would take it over ``max_batch_size`` inputs or ``max_batch_cost``
(the padded cost: the batch's largest cost times its size, the tokens or frames a padded
batch computes). One decoding thread runs the batches, so the event loop keeps accepting
and answering requests meanwhile. At most ``max_queue`` requests wait; one more is refused
(``QueueFullError``) rather than queued without bound.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class QueueFullError(RuntimeError):
    """The batcher already holds ``max_queue`` waiting requests."""


@dataclasses.dataclass
class BatchResult:
    """One request's output (or the error its input alone raised) and the batch it rode in."""

    output: Any
    batch_size: int
    decode_seconds: float


@dataclasses.dataclass
class _Waiting:
    item: Any
    cost: int
    future: asyncio.Future[BatchResult]


class DynamicBatcher:
    """Collects requests into batches for ``run_batch(items) -> outputs`` (one per item).

    If a batch raises, its requests are decoded one at a time, so an input that fails fails
    alone and the others still get their outputs.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        *,
        window_s: float,
        max_batch_size: int,
        max_batch_cost: int,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """``executor``: the one-thread executor that decodes (default: a new one); pass the
        one that loaded the model, so that torch runs on one thread only (see ``serve``)."""
        self.run_batch = run_batch
        self.window_s = window_s
        self.max_batch_size = max_batch_size
        self.max_batch_cost = max_batch_cost
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="seqlab-decode")
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not those being decoded)."""
        return len(self._waiting)

    def start(self) -> None:
        """Starts the batching task on the running event loop."""
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._serve_batches())

    async def stop(self) -> None:
        """Decodes every request still waiting, then stops the decoding thread."""
        self._stopping = True
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    def submit(self, item: Any, cost: int) -> asyncio.Future[BatchResult]:
        """Queues one input; the future resolves to its ``BatchResult``. Cancel the future to
        withdraw a request that is still waiting (a timed-out client).

        Raises:
          QueueFullError: ``max_queue`` requests are already waiting.
        """
        if self._arrived is None or self._stopping:
            raise QueueFullError("the server is not accepting requests (starting or stopping)")
        if len(self._waiting) >= self.max_queue:
            raise QueueFullError(f"{len(self._waiting)} requests are waiting (--max-queue)")
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(item, cost, future))
        self._arrived.set()
        return future

    async def run_alone(self, function: Callable[..., Any], *args: Any) -> Any:
        """Runs ``function(*args)`` on the decoding thread, between batches."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    # ---- the batching task ---------------------------------------------------------------------
    async def _serve_batches(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_withdrawn()
            if not self._waiting:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = loop.time() + self.window_s
            while not self._stopping and not self._batch_full():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if not batch:
                continue
            started = time.perf_counter()
            outputs = await loop.run_in_executor(
                self._executor, self._decode, [w.item for w in batch]
            )
            seconds = time.perf_counter() - started
            if self.on_batch is not None:
                self.on_batch(len(batch), seconds)
            for waiting, output in zip(batch, outputs, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(BatchResult(output, len(batch), seconds))

    def _drop_withdrawn(self) -> None:
        self._waiting = collections.deque(w for w in self._waiting if not w.future.done())

    def _fits(self, count: int, largest_cost: int) -> bool:
        return count <= self.max_batch_size and count * largest_cost <= self.max_batch_cost

    def _batch_full(self) -> bool:
        """Whether the waiting requests already fill a batch (or would overflow one)."""
        self._drop_withdrawn()
        largest = 0
        for count, waiting in enumerate(self._waiting, start=1):
            largest = max(largest, waiting.cost)
            if not self._fits(count, largest):
                return True
        return len(self._waiting) >= self.max_batch_size

    def _take_batch(self) -> list[_Waiting]:
        """The oldest waiting requests that fit one batch (at least one)."""
        self._drop_withdrawn()
        batch: list[_Waiting] = []
        largest = 0
        while self._waiting:
            candidate = self._waiting[0]
            if batch and not self._fits(len(batch) + 1, max(largest, candidate.cost)):
                break
            batch.append(self._waiting.popleft())
            largest = max(largest, candidate.cost)
        return batch

    def _decode(self, items: list[Any]) -> list[Any]:
        """Outputs of a batch; if it raises, each item alone (its output or its error)."""
        try:
            return list(self.run_batch(items))
        except Exception as error:
            if len(items) == 1:
                return [error]
        outputs: list[Any] = []
        for item in items:
            try:
                outputs.extend(self.run_batch([item]))
            except Exception as error:
                outputs.append(error)
        return outputs
