"""Where the paused retries of one target wait (a bare 429's pause, shared/steps/target_backoff.py).

Why: the pause is drawn from the target's refused share, which decays only on successes. At the end
of a job against a real limit the share is still saturated (the 5 s ceiling) while few calls are
left to succeed, so the last items sat out pauses of up to 5 s with the provider idle (a 400-item
job busy for 10 s took 15-16 s). The room keeps a process from idling while it has work waiting:

- a call of the target that ends (answered, or given up) leaving none of its calls active in this
  process wakes the paused retry with the earliest deadline at once;
- the last active call that pauses (every call of the target here would then be waiting) waits at
  most an idle probe: ``base`` (rate_limit_base_delay), doubling with each probe of that call,
  never more than its drawn pause: a provider with room again is found within tens of ms, and a
  saturated one sees a call's probes thin out as its drawn pauses would (a probe doubling per room,
  reset on any success, let one call spend its 20 rate-limit retries in 1.4 s);
- a call that has spent half its rate-limit retries sits out its draws (not woken, not probed): the
  early retries never use up an item's budget, whose end sends its chunk back to the queue.

Measured and not kept: a success waking the earliest paused retry (ack-clocking) and an immediate
wake of the last one pausing. With a cap of 8 per process the former added one attempt per success
(1.98-2.25 refusals per success against a real limit, from ~1.5), and both burned items' 20
rate-limit retries in 1-2 s (chunks sent back to the queue for 15 s).

The room serves thread sleepers (the sync path) and asyncio sleepers (the async path) of the same
target alike; its lock guards only the heap and counters, never I/O or an await. An asyncio
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

    __slots__ = ("event", "future", "loop", "early", "gone")

    def __init__(self, event: threading.Event | None = None, future: asyncio.Future | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, early: bool = True):
        self.event, self.future, self.loop = event, future, loop
        self.early = early  # may be woken or probed before its draw (else it is not in the heap)
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

    def __init__(self, base: float, clock=time.monotonic):
        self.base = base  # the first idle probe's pause
        self.clock = clock
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, _Sleeper]] = []  # (deadline, order, sleeper); gone ones skipped
        self._order = itertools.count()
        self._gone_in_heap = 0
        self.active = 0  # calls of this target in this process that are not paused here
        self.woken_early = 0  # pauses woken or probed before their draw (the tests read it)

    @property
    def waiting(self) -> int:
        """Paused retries that may still be woken early."""
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

    # ------------------------------------------------------------ pauses
    def pause(self, seconds: float, probes: int = 0, early: bool = True) -> bool:
        """A thread's pause: until ``seconds`` have passed or it is woken. ``probes``: the call's idle
        probes so far; True when this pause is one (shortened). ``early`` False: the full draw, never
        woken (a call that has spent half its rate-limit retries: the room never exhausts a budget)."""
        if seconds <= 0:
            return False
        event = threading.Event()
        sleeper = _Sleeper(event=event, early=early)
        wait = self._enter(sleeper, seconds, probes)
        try:
            event.wait(wait)
        finally:
            self._leave(sleeper)
        return wait < seconds

    async def apause(self, seconds: float, probes: int = 0, early: bool = True) -> bool:
        """A coroutine's pause: until ``seconds`` have passed, it is woken, or its task is cancelled."""
        if seconds <= 0:
            return False
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        sleeper = _Sleeper(future=future, loop=loop, early=early)
        wait = self._enter(sleeper, seconds, probes)
        timer = loop.call_later(wait, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()
            self._leave(sleeper)
        return wait < seconds

    def _enter(self, sleeper: _Sleeper, seconds: float, probes: int) -> float:
        """Seat a sleeper; returns how long it waits (the idle probe when it is the last active call)."""
        with self._lock:
            self.active -= 1
            if not sleeper.early:
                return seconds
            if self.active <= 0:
                probe = self.base * 2 ** min(probes, 30)
                if probe < seconds:
                    seconds = probe
                    self.woken_early += 1
            heapq.heappush(self._heap, (self.clock() + seconds, next(self._order), sleeper))
        return seconds

    def _leave(self, sleeper: _Sleeper) -> None:
        """The pause is over (deadline, wake-up or interruption): active again, unless a waker
        already counted it so."""
        with self._lock:
            if sleeper.gone:
                return
            sleeper.gone = True
            self.active += 1
            if not sleeper.early:
                return
            self._gone_in_heap += 1
            if self._gone_in_heap > 32 and self._gone_in_heap * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].gone]
                heapq.heapify(self._heap)
                self._gone_in_heap = 0

    # ------------------------------------------------------------ under the lock
    def _wake_if_idle(self) -> _Sleeper | None:
        return self._pop() if self.active <= 0 else None

    def _pop(self) -> _Sleeper | None:
        """Take the live sleeper with the earliest deadline out of the room; it is active from now
        (counted here, so that a second call ending before it runs does not wake another)."""
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
