"""The chunk ledger: every chunk of a job, with its payload, from enqueue until its chunk_end.

Why: kombu's Redis transport takes a message with BRPOP and records it as unacked in a second
step; a worker killed between the two, or a message removed from the broker by hand, is lost for
good and its job would stay ``running`` forever. The ledger keeps what is needed to send such a
chunk again, and when each chunk was last seen alive (sent, restored, held by a live worker,
running). The sweeper (workers/sweeper.py) re-sends the ones nobody has seen for longer than a
lease. Results are idempotent (HSETNX per item), so a copy that was only slow is harmless.

Each chunk has one live copy, named by its Celery task id (``chunk_task_id``): a requeue or a
re-send replaces it, and only the live copy's end removes the chunk from the ledger.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from shared import keys

# The end of one copy of a chunk, as a Lua fragment other scripts include (shared/store.py's
# end-of-chunk script runs it with the job's own bookkeeping in one round trip). Reads the locals
# ledger, seen, chunk, task; sets done = 1 when this copy was the live one.
DONE_FRAGMENT = """
local done = 0
if task ~= '' and redis.call('HGET', ledger, 't:' .. chunk) == task then
  redis.call('HDEL', ledger, 'p:' .. chunk, 't:' .. chunk, 'q:' .. chunk)
  redis.call('ZREM', seen, chunk)
  done = 1
end
"""

# KEYS: ledger, seen ; ARGV: chunk, task id
_DONE = "local ledger, seen, chunk, task = KEYS[1], KEYS[2], ARGV[1], ARGV[2]" + DONE_FRAGMENT + "return done"

# KEYS: ledger, seen, job ; ARGV: chunk, expected task id, new task id, cutoff, now
# -> payload JSON when this call took over the chunk, else false
_CLAIM = """
if redis.call('HGET', KEYS[1], 't:' .. ARGV[1]) ~= ARGV[2] then return false end
local seen = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')
if seen >= tonumber(ARGV[4]) then return false end
redis.call('HSET', KEYS[1], 't:' .. ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'chunk_resends', 1)
return redis.call('HGET', KEYS[1], 'p:' .. ARGV[1])
"""


def chunk_task_id(job_id: str, chunk_id: str | int) -> str:
    """A fresh Celery task id for one copy of a chunk; the job and chunk can be read back from it
    (a worker's lease thread sees only message headers)."""
    return f"{job_id}.{chunk_id}.{uuid.uuid4().hex[:12]}"


def parse_chunk_task_id(task_id: str | None) -> tuple[str, str] | None:
    """(job id, chunk id) of a task id made by :func:`chunk_task_id`, else None."""
    parts = (task_id or "").split(".")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1]


def queue_sent(pipe, job_id: str, chunk_id: str | int, task_id: str, queue: str, payload_json: str, ttl: int,
               now: float | None = None) -> None:
    """The commands of :meth:`ChunkLedger.sent`, queued on a transaction pipeline (the producer
    writes a job and its first chunk's entry in one round trip, JobStore.create_job)."""
    now = time.time() if now is None else now
    ledger, seen, cid = keys.job_ledger(job_id), keys.job_ledger_seen(job_id), str(chunk_id)
    pipe.hset(ledger, mapping={f"p:{cid}": payload_json, f"t:{cid}": task_id, f"q:{cid}": queue})
    pipe.zadd(seen, {cid: now})
    pipe.expire(ledger, ttl)
    pipe.expire(seen, ttl)
    pipe.zadd(keys.ledger_jobs(), {job_id: now}, nx=True)


class ChunkLedger:
    """Ledger operations; one Redis round trip each (pipelines or Lua)."""

    def __init__(self, client):
        self.r = client
        self._done = client.register_script(_DONE)
        self._claim = client.register_script(_CLAIM)

    def sent(self, job_id: str, chunk_id: str | int, task_id: str, queue: str, payload_json: str, ttl: int,
             now: float | None = None) -> None:
        """Record the live copy of a chunk before it is published (a send that fails halfway is
        then re-sent by the sweeper instead of lost)."""
        with self.r.pipeline(transaction=True) as p:
            queue_sent(p, job_id, chunk_id, task_id, queue, payload_json, ttl, now)
            p.execute()

    def touch(self, chunks: Iterable[tuple[str, str]], now: float | None = None) -> None:
        """Mark chunks as seen alive now; a chunk already ended stays ended (ZADD XX)."""
        by_job: dict[str, list[str]] = {}
        for job_id, chunk_id in chunks:
            by_job.setdefault(job_id, []).append(chunk_id)
        if not by_job:
            return
        now = time.time() if now is None else now
        with self.r.pipeline(transaction=False) as p:
            for job_id, chunk_ids in by_job.items():
                p.zadd(keys.job_ledger_seen(job_id), dict.fromkeys(chunk_ids, now), xx=True)
            p.execute()

    def done(self, job_id: str, chunk_id: str | int, task_id: str | None) -> bool:
        """The copy ``task_id`` of a chunk ended: forget the chunk unless a newer copy replaced it."""
        if not task_id:
            return False
        return bool(self._done(keys=[keys.job_ledger(job_id), keys.job_ledger_seen(job_id)],
                               args=[str(chunk_id), task_id]))

    def stale(self, job_id: str, cutoff: float) -> list[tuple[str, str, str]]:
        """(chunk id, task id, queue) of chunks not seen alive since ``cutoff``."""
        ids = [_text(c) for c in self.r.zrangebyscore(keys.job_ledger_seen(job_id), "-inf", f"({cutoff}")]
        if not ids:
            return []
        fields = [f for cid in ids for f in (f"t:{cid}", f"q:{cid}")]
        values = self.r.hmget(keys.job_ledger(job_id), fields)
        out = []
        for i, cid in enumerate(ids):
            task_id, queue = values[2 * i], values[2 * i + 1]
            if task_id is not None and queue is not None:
                out.append((cid, _text(task_id), _text(queue)))
        return out

    def claim(self, job_id: str, chunk_id: str, task_id: str, new_task_id: str, cutoff: float,
              now: float | None = None) -> str | None:
        """Take over a stale chunk for a re-send: its payload JSON, or None when the chunk moved on
        (ended, replaced, or seen alive since ``cutoff``) meanwhile."""
        now = time.time() if now is None else now
        raw = self._claim(keys=[keys.job_ledger(job_id), keys.job_ledger_seen(job_id), keys.job(job_id)],
                          args=[chunk_id, task_id, new_task_id, repr(cutoff), repr(now)])
        return _text(raw) if raw else None

    def outstanding(self, job_id: str) -> int:
        return int(self.r.zcard(keys.job_ledger_seen(job_id)))

    def jobs(self) -> list[str]:
        return [_text(j) for j in self.r.zrange(keys.ledger_jobs(), 0, -1)]

    def forget(self, job_id: str) -> None:
        """Drop a finished job's ledger."""
        with self.r.pipeline(transaction=False) as p:
            p.delete(keys.job_ledger(job_id), keys.job_ledger_seen(job_id))
            p.zrem(keys.ledger_jobs(), job_id)
            p.execute()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
