"""workers/loop_handoff.py on a real event loop in its own thread: a burst of submissions starts
with one loop wake-up, results and errors arrive, cancel() works queued and running."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import CancelledError, wait

import pytest

from workers.loop_handoff import LoopHandoff


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_burst_is_started_by_one_callback_and_every_result_arrives(loop):
    handoff = LoopHandoff(loop)
    wakeups = []
    original = loop.call_soon_threadsafe

    def counted(*args, **kwargs):
        wakeups.append(args[0])
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]  # count the loop's wake-ups

    async def double(x):
        await asyncio.sleep(0.01)
        return 2 * x

    gate = threading.Event()
    loop.call_soon_threadsafe(gate.wait, 5)  # hold the loop so the whole burst queues up
    futures = [handoff.submit(lambda x=x: double(x)) for x in range(100)]
    gate.set()
    wait(futures, timeout=10)
    assert [f.result() for f in futures] == [2 * x for x in range(100)]
    assert len([w for w in wakeups if getattr(w, "__name__", "") == "_start"]) == 1


def test_errors_and_cancellation_reach_the_submitter(loop):
    handoff = LoopHandoff(loop)
    started = threading.Event()
    ended = []

    async def fails():
        raise ValueError("bad item")

    async def slow():
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    failing = handoff.submit(fails)
    with pytest.raises(ValueError, match="bad item"):
        failing.result(timeout=5)
    running = handoff.submit(slow)
    assert started.wait(5)
    assert running.cancel()  # still pending for the submitter while the coroutine runs, as with
    deadline = time.monotonic() + 5  # run_coroutine_threadsafe: cancel() cancels the coroutine
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended == ["cancelled"]
    with pytest.raises(CancelledError):
        running.result(timeout=1)

    gate = threading.Event()
    loop.call_soon_threadsafe(gate.wait, 5)
    made = []
    queued = handoff.submit(lambda: made.append(1) or slow())
    assert queued.cancel()  # cancelled before the loop got to it: its coroutine is never made
    gate.set()
    handoff.submit(fails).exception(timeout=5)  # the loop ran the batch with the cancelled one in it
    assert made == []
