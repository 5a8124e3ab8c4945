"""Coroutines handed from a worker's threads to the process's event loop in batches.

Why: ``asyncio.run_coroutine_threadsafe`` per item wakes the loop once per item (a self-pipe
write and a GIL hand-off each); a chunk submits its window of items in a burst, so here the
first submission of a burst schedules one callback that starts every coroutine queued by then.
The futures behave as run_coroutine_threadsafe's: ``cancel()`` before or while the coroutine
runs cancels it, and they carry its result, exception or cancellation.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any


class LoopHandoff:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._queued: list[tuple[Callable[[], Coroutine[Any, Any, Any]], Future]] = []
        self._lock = threading.Lock()

    def submit(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Future:
        """``make()`` runs on the loop (so a cancelled submission never creates its coroutine)."""
        future: Future = Future()
        with self._lock:
            self._queued.append((make, future))
            first = len(self._queued) == 1
        if first:
            self.loop.call_soon_threadsafe(self._start)
        return future

    def _start(self) -> None:
        with self._lock:
            batch, self._queued = self._queued, []
        for make, future in batch:
            if future.cancelled():
                continue
            task = self.loop.create_task(make())
            task.add_done_callback(functools.partial(_settle, future))
            future.add_done_callback(functools.partial(self._cancel_if_cancelled, task))

    def _cancel_if_cancelled(self, task: asyncio.Task, future: Future) -> None:
        if future.cancelled():  # called from the canceller's thread
            self.loop.call_soon_threadsafe(task.cancel)


def _settle(future: Future, task: asyncio.Task) -> None:
    if task.cancelled():
        future.cancel()
    if not future.set_running_or_notify_cancel():
        return
    exc = task.exception()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(task.result())
