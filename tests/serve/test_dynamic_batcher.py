"""The dynamic batcher alone: windows, budgets, the queue limit, withdrawn requests, failures
that stay with their input, and stopping that answers what waits."""

from __future__ import annotations

import asyncio

import pytest

from seqlab.serve.dynamic_batcher import DynamicBatcher, QueueFullError


class Recorder:
    """A ``run_batch`` that upper-cases its items and records each batch; "bad" raises."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        if "bad" in items:
            raise ValueError("bad input")
        return [item.upper() for item in items]


def batcher(recorder: Recorder, **settings: float) -> DynamicBatcher:
    options = {"window_s": 0.2, "max_batch_size": 8, "max_batch_cost": 1000, "max_queue": 16}
    return DynamicBatcher(recorder, **(options | settings))  # type: ignore[arg-type]


def test_requests_within_the_window_share_a_batch() -> None:
    recorder = Recorder()

    async def scenario() -> list[tuple[str, int]]:
        b = batcher(recorder)
        b.start()
        futures = [b.submit(text, 3) for text in ("a", "b", "c")]
        results = [await f for f in futures]
        await b.stop()
        return [(r.output, r.batch_size) for r in results]

    assert asyncio.run(scenario()) == [("A", 3), ("B", 3), ("C", 3)]
    assert recorder.batches == [["a", "b", "c"]]


def test_a_batch_closes_at_its_size_and_padded_cost() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        # Costs 10, 10, 40: two of 10 fit (2 x 10 <= 50); adding 40 would pad to 3 x 40.
        b = batcher(recorder, max_batch_cost=50, window_s=5.0)
        b.start()
        futures = [b.submit(text, cost) for text, cost in (("a", 10), ("b", 10), ("c", 40))]
        await asyncio.wait_for(futures[1], 2.0)  # a full batch does not wait out its window
        await b.stop()  # nor does the last one, once the batcher stops

    asyncio.run(scenario())
    assert recorder.batches == [["a", "b"], ["c"]]

    recorder = Recorder()

    async def by_size() -> None:
        b = batcher(recorder, max_batch_size=2, window_s=5.0)
        b.start()
        futures = [b.submit(t, 1) for t in "abcde"]
        await asyncio.wait_for(futures[3], 2.0)
        await b.stop()

    asyncio.run(by_size())
    assert recorder.batches == [["a", "b"], ["c", "d"], ["e"]]


def test_a_full_queue_refuses_and_a_withdrawn_request_is_not_decoded() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        b = batcher(recorder, max_queue=2, window_s=0.3)
        b.start()
        first, withdrawn = b.submit("a", 1), b.submit("b", 1)
        with pytest.raises(QueueFullError, match="2 requests are waiting"):
            b.submit("c", 1)
        withdrawn.cancel()  # a client that timed out
        assert (await first).output == "A"
        await b.stop()

    asyncio.run(scenario())
    assert recorder.batches == [["a"]]


def test_a_failing_input_fails_alone() -> None:
    recorder = Recorder()

    async def scenario() -> list[object]:
        b = batcher(recorder)
        b.start()
        futures = [b.submit(text, 1) for text in ("a", "bad", "c")]
        outputs = [(await f).output for f in futures]
        await b.stop()
        return outputs

    a, bad, c = asyncio.run(scenario())
    assert (a, c) == ("A", "C")
    assert isinstance(bad, ValueError)
    assert recorder.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


def test_stop_answers_the_waiting_requests_then_refuses_new_ones() -> None:
    recorder = Recorder()

    async def scenario() -> list[str]:
        b = batcher(recorder, window_s=10.0)
        b.start()
        futures = [b.submit(text, 1) for text in ("a", "b")]
        await asyncio.sleep(0.05)
        await b.stop()  # does not wait out the 10-second window
        with pytest.raises(QueueFullError, match="not accepting"):
            b.submit("c", 1)
        return [f.result().output for f in futures]

    assert asyncio.run(scenario()) == ["A", "B"]
