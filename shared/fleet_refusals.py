"""Does a target refuse more when the fleet sends more? The evidence behind the learned cap's cuts.

Why: a 429 that names no wait (no Retry-After, no x-ratelimit-* saying none remain) is either a
random refusal (a shared provider's overload: a 30% storm that no rate of ours causes, where
cutting the cap only slows us down: it used to collapse to one call per process) or our rate at a
real limit (where not cutting hammers it). Their signatures differ in the fleet's attempt rate: a
random storm refuses the same share at any rate, a limit refuses a larger share the more we send
(its successes stay at its rate). One process cannot see that alone (with four processes on one
limit, its own rate barely moves the refusals: an earlier per-process test was reverted for it), so
every process adds its attempts and refusals per ``SLOT_S`` wall-clock slot to a short-lived
per-target hash in Redis (shared/keys.py ``refusals``), once per slot, and reads the fleet's last
``WINDOW_SLOTS`` with one HMGET in the same round trip (about ten round trips a second per busy
process, ~0.3 ms of CPU each on loopback; nothing per call). That round trip runs on a thread of
its own, not on the caller's (the worker's event loop): on a loaded machine it took 3-5 ms, the
whole loop waiting (90-140 ms a job in a 30% 429 storm), and the verdict is as of the last flush
anyway.

The comparison is paired in time: in each pair of adjacent slots whose attempt counts differ by at
least ``PAIR_RATIO``, the busier slot's counts go to one pool and the quieter one's to the other.
Pairs of neighbours cancel slow drifts (a storm that starts after a storm-free job, a limit that
appears) that a split of the whole window by rate would read as a slope. A limit: the busier
pool's share is higher by ``MIN_RISE`` and 2.5 standard errors, and its successes per slot grow
less than the square root of its attempts' (``MAX_SUCCESS_ELASTICITY``: a limit lets about the same
number through however much is sent, a storm a fixed share). Flat: a rate spread large enough and
no rise beyond one standard error. Anything else is unknown.

Why the successes too: the share alone read a 30% storm as a limit (rise 0.11-0.14 over spreads of
2.3-3.7) in 5 of 6 runs of the storm test (five storms each), whose storm-free and storm jobs alternate.
The rise came from job boundaries (a storm-free job's last slot, quiet and unrefused, beside a
storm job's busy first one), a storm job's quiet slots that happened to be refused less, and
retries at once, which add a slot's refusals to its own attempts. The cap then fell from hundreds
to 1-2 per process for the limit's 30 s hold: storm jobs took 1.2-2.8 s instead of 0.5, and the
storm-free ones after them 0.7-1.3 s instead of 0.3. In those windows the busier pool's successes
per slot grew with its attempts almost as a storm's do (elasticity 0.8); a token bucket's stay put
(about 0), a limit's bursts grow a little (0.2).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from shared import keys

SLOT_S = 0.1  # about one round trip of a fast provider: rates vary from slot to slot
WINDOW_SLOTS = 30  # the last 3 s: a cut's effect and a storm's start are both inside it
SLOT_TTL_S = 10  # the record's life after the fleet's last flush
PRUNE_SLOTS = 10
PAIR_RATIO = 1.25  # a pair whose attempts differ less says little about the slope
MIN_ATTEMPTS = 30  # per pool, before any verdict
MIN_SPREAD = 1.5  # the busier pool's attempts per slot over the quieter's, for a verdict
MIN_RISE = 0.1  # share difference a limit shows at the least (beside 2.5 standard errors)
MAX_SUCCESS_ELASTICITY = 0.5  # a limit's successes per slot grow at most spread ** this from quiet to busy
HOLD_S = {"flat": WINDOW_SLOTS * SLOT_S, "limit": 10 * WINDOW_SLOTS * SLOT_S}
RECENT_PAIRS_SLOTS = 10  # the last second, tested on its own too
RECENT_SLOTS = 3  # the refused share "now": the last 0.3 s ...
MIN_RECENT = 20  # ... when it holds this many attempts (else the window's)
NO_EVIDENCE = 30  # attempts in the window below which the target counts as idle (nothing known)
NOT_OURS_BELOW_SHARE = 0.5  # above it refusals count as ours whatever the slope (shared/concurrency.py)
# ... the fleet's recent share only this many standard errors above it: 20-35 attempts of a 30% storm are
# more than half refused by chance now and then (the stand-in's seeded storm opens with 11 of 20), and
# each such cut took the cap from hundreds to 2-3 (what the last 2 s let through)
OVER_HALF_Z = 2.0
MIN_REFUSED = 30  # "flat" needs refusals to be flat (a dozen at a limit's edge read flat by chance)
LIMIT_FIRM_S = WINDOW_SLOTS * SLOT_S  # a limit verdict is not replaced by a flat one this soon


@dataclass(frozen=True)
class Verdict:
    """``limit``: refusals grow with the fleet's rate; ``flat``: they do not; ``unknown``."""

    kind: str
    share: float = 0.0  # the fleet's refused share in the window
    attempts: int = 0  # the fleet's attempts in the window (few: the target was idle, nothing is known)
    recent_share: float = 0.0  # the fleet's refused share in the last RECENT_SLOTS (a burst, at once)
    recent_attempts: int = 0  # the attempts that share is of
    rise: float = 0.0  # busier pool's share minus the quieter's
    spread: float = 0.0  # busier pool's attempts per slot over the quieter's
    success_growth: float = 0.0  # busier pool's successes per slot over the quieter's

    @property
    def mostly_refused(self) -> bool:
        """More than half of the fleet's recent attempts refused, beyond chance (``OVER_HALF_Z``)."""
        n = self.recent_attempts
        return n > 0 and self.recent_share > NOT_OURS_BELOW_SHARE + OVER_HALF_Z * math.sqrt(0.25 / n)


UNKNOWN = Verdict("unknown")


def verdict_of(slots: list[tuple[int, int]]) -> Verdict:
    """``slots``: (attempts, refused) of consecutive slots, oldest first (0, 0 for an idle one). A
    limit seen in the last second alone counts: a burst's pairs are diluted in the whole window."""
    whole = _paired(slots)
    if whole.kind != "limit":
        recent = _paired(slots[-RECENT_PAIRS_SLOTS:])
        if recent.kind == "limit":
            whole = replace(recent, share=whole.share, attempts=whole.attempts)
    last = slots[-RECENT_SLOTS:]
    last_a = sum(a for a, _ in last)
    if last_a >= MIN_RECENT:
        return replace(whole, recent_share=sum(r for _, r in last) / last_a, recent_attempts=last_a)
    return replace(whole, recent_share=whole.share, recent_attempts=whole.attempts)


def _paired(slots: list[tuple[int, int]]) -> Verdict:
    pools = {"busy": [0, 0, 0], "quiet": [0, 0, 0]}  # attempts, refused, slots
    for (a1, r1), (a2, r2) in zip(slots, slots[1:], strict=False):
        if min(a1, a2) <= 0 or max(a1, a2) < PAIR_RATIO * min(a1, a2):
            continue
        busy, quiet = ((a1, r1), (a2, r2)) if a1 > a2 else ((a2, r2), (a1, r1))
        for name, (a, r) in (("busy", busy), ("quiet", quiet)):
            pools[name][0] += a
            pools[name][1] += r
            pools[name][2] += 1
    total_a = sum(a for a, _ in slots)
    share = sum(r for _, r in slots) / total_a if total_a else 0.0
    (na, nr, ns), (qa, qr, qs) = pools["busy"], pools["quiet"]
    if na < MIN_ATTEMPTS or qa < MIN_ATTEMPTS:
        return Verdict("unknown", share, total_a)
    spread = (na / ns) / (qa / qs)
    rise = nr / na - qr / qa
    quiet_successes = (qa - qr) / qs
    growth = (na - nr) / ns / quiet_successes if quiet_successes > 0 else math.inf
    pooled = (nr + qr) / (na + qa)
    # each slot may sit in two pairs: half the attempts count as independent
    se = math.sqrt(max(pooled * (1 - pooled), 1e-9) * (2 / na + 2 / qa))
    if rise >= MIN_RISE and rise >= 2.5 * se and growth <= spread ** MAX_SUCCESS_ELASTICITY:
        kind = "limit"
    elif spread >= MIN_SPREAD and rise <= se and nr + qr >= MIN_REFUSED:
        kind = "flat"
    else:
        kind = "unknown"
    return Verdict(kind, share, total_a, rise=round(rise, 3), spread=round(spread, 2),
                   success_growth=round(growth, 2))


class _OffLoop:
    """One daemon thread per process running the records' round trips in order (a daemon, so a
    Redis that does not answer never holds up the process's exit)."""

    def __init__(self) -> None:
        self._pid = -1
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()

    def run(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: the parent's thread is not here
                self._pid, self._jobs = os.getpid(), queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(self._jobs,), name="tidyq-refusals", daemon=True).start()
            self._jobs.put(job)

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            jobs.get()()

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the jobs handed over so far have run (tests; a clean shutdown)."""
        done = threading.Event()
        self.run(done.set)
        return done.wait(timeout)


OFF_LOOP = _OffLoop()


class FleetRefusals:
    """This process's counts of the current slot, flushed to the fleet's record at the first
    outcome of a later slot; the fleet's verdict as of the last flush. Without Redis the fleet is
    this process. Counts live on one event loop at a time (the worker's), so no lock; the flush's
    round trip and verdict run on ``OFF_LOOP``'s thread, in order (the verdict is one attribute)."""

    def __init__(self, target: str, redis: Any = None, clock=time.time):
        self.target = target
        self.redis = redis
        self.clock = clock  # wall time: slots must line up across processes and hosts
        self.verdict = UNKNOWN
        self._slot = -1
        self._attempts = 0
        self._refused = 0
        self._local: dict[int, tuple[int, int]] = {}  # without Redis: this process's slots
        self._held: Verdict | None = None
        self._held_at = 0.0

    def record(self, refused: bool) -> None:
        slot = int(self.clock() / SLOT_S)
        if slot != self._slot:
            if self._attempts:
                self._flush(slot)
            self._slot, self._attempts, self._refused = slot, 0, 0
        self._attempts += 1
        self._refused += refused

    def _flush(self, now_slot: int) -> None:
        done, counts = self._slot, (self._attempts, self._refused)
        # the slots before the current one, oldest first; the last one may still lack the counts of
        # a process that has not moved on yet (a burst is seen within one slot, a little short)
        window = range(now_slot - WINDOW_SLOTS, now_slot)
        if self.redis is None:  # this process's own record: no I/O to wait for
            self._exchange_and_judge(done, counts, window, self.clock())
        else:
            now = self.clock()  # the flush's time, however late its thread runs it
            OFF_LOOP.run(lambda: self._exchange_and_judge(done, counts, window, now))

    def _exchange_and_judge(self, done: int, counts: tuple[int, int], window: range, now: float) -> None:
        try:
            slots = self._exchange(done, counts, window)
        except Exception:  # no evidence never fails a call: the cap then cuts only on headers
            self.verdict = UNKNOWN
            return
        self._judge(verdict_of(slots), now)

    def _judge(self, latest: Verdict, now: float) -> None:
        """A conclusive verdict holds until the other one replaces it or for its hold time: between
        a limit's bursts the window often has too few refusals for a verdict of its own (a limit
        is believed for longer: the cap grows back to it, and a late cut is what hammers it)."""
        firm_limit = self._held is not None and self._held.kind == "limit" and now - self._held_at < LIMIT_FIRM_S
        if latest.kind == "limit" or (latest.kind == "flat" and not firm_limit):
            self._held, self._held_at = latest, now
        elif self._held is not None and now - self._held_at > HOLD_S[self._held.kind]:
            self._held = None
        held = self._held
        self.verdict = replace(held, share=latest.share, attempts=latest.attempts) if held else latest

    def _exchange(self, done: int, counts: tuple[int, int], window: range) -> list[tuple[int, int]]:
        if self.redis is None:
            self._local[done] = counts
            for old in [s for s in self._local if s < window.start]:
                del self._local[old]
            return [self._local.get(s, (0, 0)) for s in window]
        key = keys.refusals(self.target)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, f"{done}:a", counts[0])
        pipe.hincrby(key, f"{done}:r", counts[1])
        pipe.expire(key, SLOT_TTL_S)
        # the slots that just left the window (and a few before, missed while no process flushed)
        pipe.hdel(key, *(f"{s}:{c}" for s in range(window.start - PRUNE_SLOTS, window.start) for c in "ar"))
        pipe.hmget(key, [f"{s}:{c}" for s in window for c in "ar"])
        values = [int(v or 0) for v in pipe.execute()[-1]]
        return list(zip(values[0::2], values[1::2], strict=True))
