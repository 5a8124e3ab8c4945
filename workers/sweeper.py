"""The ledger sweeper: sends again a chunk the broker lost, so no job stalls.

Every worker node runs the loop in its main process; a Redis lock lets one sweep at a time across
the fleet (the holder renews it; when it dies another node takes over after ``3 x interval``).
Each sweep, for every job with a ledger (shared/ledger.py):
- a job that has ended (or expired) gets its ledger dropped;
- a chunk not seen alive for ``TIDYQ_LEDGER_LEASE_SECONDS`` is looked for in the broker: in its
  queue's lists (waiting) and in kombu's ``unacked`` hash (held by a worker, or by a dead one
  whose message kombu restores itself); found means alive;
- a chunk missing from both on two sweeps in a row is sent again under a new task id (two, so
  a message in transit between the list and the unacked hash during one scan is not resent).
A live worker marks the chunks it holds every few seconds (workers/leases.py), so only queued
chunks ever need the scan. Lost chunk to re-send: between lease + interval and lease + 2 x interval
(30-50 s at the defaults).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable

from celery import bootsteps

from shared import keys
from shared.config import Settings
from shared.jobs import JobState
from shared.ledger import ChunkLedger, chunk_task_id
from shared.queues import CHUNK_TASK
from shared.telemetry import get_logger

# kombu's Redis transport: priority sub-queues are "<queue>\x06\x16<priority>"
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (3, 6, 9)
_TASK_ID = re.compile(rb'"(?:id|correlation_id)": ?"([^"]+)"')
_SCAN_PAGE = 200

# KEYS: lock ; ARGV: holder, ttl seconds -> 1 when the caller holds the lock
_LOCK = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

Send = Callable[[dict, str, str], None]  # (payload, queue, task id)


def queue_keys(queue: str) -> list[str]:
    return [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def task_ids_in(raw_messages) -> set[str]:
    """Task ids named in raw kombu messages (their headers are plain JSON; the body is base64)."""
    found: set[str] = set()
    for raw in raw_messages:
        if isinstance(raw, str):
            raw = raw.encode()
        found.update(m.decode() for m in _TASK_ID.findall(raw))
    return found


class Sweeper:
    """One node's sweeping logic; ``sweep`` does one pass when this node holds the lock."""

    def __init__(self, client, send: Send, settings: Settings, holder: str, *, unacked_key: str = "unacked"):
        self.r, self.send, self.settings, self.holder = client, send, settings, holder
        self.unacked_key = unacked_key
        self.ledger = ChunkLedger(client)
        self._lock = client.register_script(_LOCK)
        self._suspects: set[tuple[str, str, str]] = set()  # (job, chunk, task id) missing on the last sweep
        self.log = get_logger(component="sweeper")

    def holds_lock(self) -> bool:
        ttl = max(1, int(self.settings.sweep_interval * 3))
        return bool(self._lock(keys=[keys.sweeper_lock()], args=[self.holder, ttl]))

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """One pass; returns counts (jobs looked at, stale chunks, re-sent)."""
        if not self.holds_lock():
            return {"jobs": 0, "stale": 0, "resent": 0}
        now = time.time() if now is None else now
        cutoff = now - self.settings.ledger_lease_seconds
        stale: list[tuple[str, str, str, str]] = []  # job, chunk, task id, queue
        jobs = self.ledger.jobs()
        for job_id in jobs:
            st = self.r.hget(keys.job(job_id), "status")
            state = st.decode() if isinstance(st, bytes) else st
            if state not in (JobState.QUEUED.value, JobState.RUNNING.value):
                if state != JobState.CANCELLING.value:
                    self.ledger.forget(job_id)
                continue
            stale += [(job_id, cid, tid, q) for cid, tid, q in self.ledger.stale(job_id, cutoff)]
        missing = self._missing(stale)
        resent = 0
        suspects = set()
        for job_id, cid, tid, queue in missing:
            if (job_id, cid, tid) not in self._suspects:
                suspects.add((job_id, cid, tid))
                continue
            resent += self._resend(job_id, cid, tid, queue, cutoff, now)
        self._suspects = suspects
        return {"jobs": len(jobs), "stale": len(stale), "resent": resent}

    def _missing(self, stale: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
        """The stale chunks found neither waiting in the broker nor held; the found ones are
        marked alive (they are not scanned again for a lease)."""
        if not stale:
            return []
        present = self._unacked_ids()  # first: a restore moves a message to the list, never back
        for queue in {q for *_, q in stale}:
            present |= self._queued_ids(queue)
        alive = [(job, cid) for job, cid, tid, _ in stale if tid in present]
        self.ledger.touch(alive)
        return [entry for entry in stale if entry[2] not in present]

    def _queued_ids(self, queue: str) -> set[str]:
        found: set[str] = set()
        for key in queue_keys(queue):
            start = 0
            while page := self.r.lrange(key, start, start + _SCAN_PAGE - 1):
                found |= task_ids_in(page)
                start += len(page)
        return found

    def _unacked_ids(self) -> set[str]:
        found: set[str] = set()
        for _tag, raw in self.r.hscan_iter(self.unacked_key, count=_SCAN_PAGE):
            found |= task_ids_in([raw])
        return found

    def _resend(self, job_id: str, chunk_id: str, task_id: str, queue: str, cutoff: float, now: float) -> int:
        new_id = chunk_task_id(job_id, chunk_id)
        raw = self.ledger.claim(job_id, chunk_id, task_id, new_id, cutoff, now)
        if raw is None:
            return 0
        self.send(json.loads(raw), queue, new_id)
        self.log.warning("chunk_resent", job_id=job_id, chunk=chunk_id, lost_task=task_id, task=new_id, queue=queue)
        return 1


class LedgerSweeper(bootsteps.StartStopStep):
    """Consumer step: a daemon thread in the worker's main process runs :class:`Sweeper`."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self._stop = threading.Event()

    def start(self, c) -> None:
        from shared.config import get_settings
        from shared.redisconn import get_redis

        self._stop.set()  # a consumer restart (reconnect) replaces the previous thread
        settings = get_settings()
        app = c.app
        options = app.conf.broker_transport_options or {}

        def send(payload: dict, queue: str, task_id: str) -> None:
            app.send_task(CHUNK_TASK, args=[payload], queue=queue, task_id=task_id)

        sweeper = Sweeper(get_redis(app.conf.broker_url), send, settings, c.hostname,
                          unacked_key=options.get("unacked_key", "unacked"))
        stop = self._stop = threading.Event()

        def loop() -> None:
            while not stop.wait(settings.sweep_interval):
                try:
                    sweeper.sweep()
                except Exception as exc:  # Redis down: the next sweep tries again
                    sweeper.log.warning("ledger_sweep_failed", error=str(exc)[:200])

        threading.Thread(target=loop, name="tidyq-sweeper", daemon=True).start()

    def shutdown(self, c) -> None:
        self._stop.set()
