"""Where the paused retries of one target wait (a bare 429's pause, shared/steps/target_backoff.py).

Why: the pause is drawn from the target's refused share, which decays only on successes. At the end
of a job against a real limit the share is still saturated (the 5 s ceiling) while few calls are
left to succeed, so the last items sat out pauses of up to 5 s with the provider idle: a 400-item
job that was busy for 10 s took 15-16 s. Here a pause ends at its drawn deadline or earlier:

- each success of the target in this process wakes the paused retry with the earliest deadline
  (the provider just answered: it has room; ack-clocking, one retry per answer);
- when no call of the target is active in this process (every call of it here is paused), the
  earliest is woken: the process never idles while it has work for the target.

The room serves thread sleepers (the sync path) and asyncio sleepers (the async path) of the same
target alike; its lock guards only the heap and a counter, never I/O or an await. An asyncio
sleeper awaits a future, so cancelling its task (a cancelled job, a deadline) ends the pause at
once, as ``asyncio.sleep`` did; a thread's wait ends on a signal as ``time.sleep`` did.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from contextlib import contextmanager


class _Sleeper:
    """One paused retry: a thread's event or a loop's future, and whether it has left the room."""

    __slots__ = ("event", "future", "loop", "gone")

    def __init__(self, event: threading.Event | None = None, future: asyncio.Future | None = None,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.event, self.future, self.loop = event, future, loop
        self.gone = False  # woken or expired: set under the room's lock, once

    def wake(self) -> None:
        """Called outside the lock, from any thread."""
        if self.event is not None:
            self.event.set()
            return
        assert self.future is not None and self.loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            _resolve(self.future)
        else:
            try:
                self.loop.call_soon_threadsafe(_resolve, self.future)
            except RuntimeError:  # the loop is closed: its sleeper is gone with it
                pass


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class WaitingRoom:
    """The paused retries of one target in this process and the count of its calls not paused."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, _Sleeper]] = []  # (deadline, order, sleeper); gone ones skipped
        self._order = itertools.count()
        self._gone_in_heap = 0
        self.active = 0  # calls of this target in this process that are not paused here
        self.woken_early = 0  # pauses ended before their deadline (ops and tests read it)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._heap) - self._gone_in_heap

    # ------------------------------------------------------------ calls
    @contextmanager
    def call(self):
        """Around one call's attempts (retries included): it is active here except while paused."""
        with self._lock:
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1
                woken = self._wake_if_idle()
            _wake(woken)

    def succeeded(self) -> None:
        """An answer of the target: the paused retry due first goes now."""
        with self._lock:
            woken = self._pop()
        _wake(woken)

    # ------------------------------------------------------------ pauses
    def pause(self, seconds: float) -> None:
        """A thread's pause: until ``seconds`` have passed or it is woken."""
        if seconds <= 0:
            return
        event = threading.Event()
        sleeper = _Sleeper(event=event)
        self._enter(sleeper, seconds)
        try:
            event.wait(seconds)
        finally:
            self._leave(sleeper)

    async def apause(self, seconds: float) -> None:
        """A coroutine's pause: until ``seconds`` have passed, it is woken, or its task is cancelled."""
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        sleeper = _Sleeper(future=future, loop=loop)
        self._enter(sleeper, seconds)
        timer = loop.call_later(seconds, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()
            self._leave(sleeper)

    def _enter(self, sleeper: _Sleeper, seconds: float) -> None:
        with self._lock:
            heapq.heappush(self._heap, (self.clock() + seconds, next(self._order), sleeper))
            self.active -= 1
            woken = self._wake_if_idle()  # perhaps this very sleeper: then it does not pause at all
        _wake(woken)

    def _leave(self, sleeper: _Sleeper) -> None:
        """The pause is over (deadline, wake-up or interruption): active again, unless a waker
        already counted it so."""
        with self._lock:
            if sleeper.gone:
                return
            sleeper.gone = True
            self._gone_in_heap += 1
            self.active += 1
            if self._gone_in_heap > 32 and self._gone_in_heap * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].gone]
                heapq.heapify(self._heap)
                self._gone_in_heap = 0

    # ------------------------------------------------------------ under the lock
    def _wake_if_idle(self) -> _Sleeper | None:
        return self._pop() if self.active <= 0 else None

    def _pop(self) -> _Sleeper | None:
        """Take the live sleeper with the earliest deadline out of the room; it is active from now
        (counted here, so that a second idle check before it runs does not wake another)."""
        while self._heap:
            _, _, sleeper = heapq.heappop(self._heap)
            if sleeper.gone:
                self._gone_in_heap -= 1
                continue
            sleeper.gone = True
            self.active += 1
            self.woken_early += 1
            return sleeper
        return None


def _wake(sleeper: _Sleeper | None) -> None:
    if sleeper is not None:
        sleeper.wake()
