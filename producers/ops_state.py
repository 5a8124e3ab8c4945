"""Read the state of a deployment from Redis: what `tidyq metrics`, `tidyq queues` and
`tidyq doctor` show. Read-only apart from pruning stale index entries.

Sources, all in the broker's Redis so one reader sees every machine:
- queue depth: Celery's Redis transport keeps each queue as LISTs (one per priority step,
  ``name`` and ``name\\x06\\x16<p>``); LLEN of each, summed (what kombu's own _size does).
- oldest item age: kombu LPUSHes and workers BRPOP, so the oldest message is at index -1. Its
  body is our chunk payload, which carries the job's ``created_at``: age = now - created_at,
  i.e. how long the oldest waiting item has waited since its job was submitted (a requeued
  chunk keeps its job's age).
- live workers: heartbeats written by workers/metrics_publisher.py (a SIGKILLed node drops out
  after three missed beats; Celery's broadcast ping would cost a full reply timeout per scrape).
- counters and rates: the cluster-wide hash and 10-second buckets the publisher fills.
- running jobs: job ids the workers touched recently, joined with the job hashes of shared.store.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field

import redis

from shared import keys
from shared.keys import METRICS_WINDOW_SECONDS as WINDOW_SECONDS
from shared.queues import ALL_QUEUES

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu.transport.redis.PRIORITY_STEPS (Celery's default)
PRIORITY_SEP = "\x06\x16"  # kombu's Channel.sep
ACTIVE_JOB_HORIZON = 3600  # a job untouched by any worker this long leaves the running view


def queue_lists(queue: str) -> list[str]:
    return [queue if p == 0 else f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def message_created_at(raw: bytes | str | None) -> float | None:
    """The submit time of a kombu-on-Redis message holding a tidyq chunk (None if unknown)."""
    if raw is None:
        return None
    try:
        msg = json.loads(raw)
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        args = decoded[0] if isinstance(decoded, list) else decoded.get("args", [])
        return float(args[0]["job"]["created_at"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


@dataclass
class WorkerState:
    hostname: str
    queues: list[str]
    processes: int
    host: str
    seconds_since_beat: float
    backends: list[str] | None = None  # configured in the worker's environment (None: not yet known)


@dataclass
class QueueState:
    name: str
    depth: int
    oldest_age_seconds: float | None
    workers: int
    processes: int
    items_per_second: float
    failed_per_second: float
    error_rate: float | None  # failed / finished over the window; None when nothing finished


@dataclass
class JobProgress:
    id: str
    kind: str
    status: str
    backend: str | None
    total: int
    succeeded: int
    failed: int
    started_at: float | None
    items_per_second: float | None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class Counter:
    metric: str
    labels: tuple[str, ...]
    value: float


@dataclass
class Snapshot:
    at: float
    window_seconds: int
    queues: list[QueueState]
    workers: list[WorkerState]
    jobs: list[JobProgress] = field(default_factory=list)
    breakers: list[dict] = field(default_factory=list)  # shared.breaker.breaker_states: one per target
    concurrency: list[dict] = field(default_factory=list)  # shared.concurrency.fleet_summary: one per target

    def to_json(self) -> dict:
        d = asdict(self)
        for j, job in zip(d["jobs"], self.jobs, strict=False):
            j["done"], j["fraction"] = job.done, round(job.fraction, 4)
        return d


class OpsReader:
    def __init__(self, client: redis.Redis, *, heartbeat_interval: float = 5.0):
        self.r = client
        self.stale_after = max(3.0, heartbeat_interval * 3)

    @classmethod
    def from_settings(cls, redis_url: str | None = None) -> OpsReader:
        from shared.config import get_settings

        s = get_settings()
        url = redis_url or s.redis_url or s.default_redis_url
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, heartbeat_interval=s.heartbeat_interval)

    # --- queues ------------------------------------------------------------------------
    def depths(self, queues=ALL_QUEUES) -> dict[str, int]:
        with self.r.pipeline(transaction=False) as p:
            for q in queues:
                for name in queue_lists(q):
                    p.llen(name)
            sizes = p.execute()
        n = len(PRIORITY_STEPS)
        return {q: int(sum(sizes[i * n:(i + 1) * n])) for i, q in enumerate(queues)}

    def oldest_ages(self, queues=ALL_QUEUES, now: float | None = None) -> dict[str, float | None]:
        now = time.time() if now is None else now
        with self.r.pipeline(transaction=False) as p:
            for q in queues:
                for name in queue_lists(q):
                    p.lindex(name, -1)
            tails = p.execute()
        n = len(PRIORITY_STEPS)
        out: dict[str, float | None] = {}
        for i, q in enumerate(queues):
            created = [t for t in (message_created_at(raw) for raw in tails[i * n:(i + 1) * n]) if t is not None]
            out[q] = max(0.0, now - min(created)) if created else None
        return out

    # --- workers -----------------------------------------------------------------------
    def workers(self, now: float | None = None) -> list[WorkerState]:
        now = time.time() if now is None else now
        self.r.zremrangebyscore(keys.workers_seen(), "-inf", now - 86400)  # long-dead nodes
        names = [_s(h) for h in self.r.zrangebyscore(keys.workers_seen(), now - self.stale_after, "+inf")]
        if not names:
            return []
        with self.r.pipeline(transaction=False) as p:
            for h in names:
                p.hgetall(keys.worker_heartbeat(h))
            rows = p.execute()
        out = []
        for h, raw in zip(names, rows, strict=True):
            if not raw:
                continue
            d = {_s(k): _s(v) for k, v in raw.items()}
            out.append(WorkerState(hostname=h, queues=[q for q in d.get("queues", "").split(",") if q],
                                   processes=int(d.get("processes") or 0), host=d.get("host", ""),
                                   seconds_since_beat=round(max(0.0, now - float(d.get("seen", now))), 3),
                                   backends=d["backends"].split(",") if "backends" in d else None))
        return out

    # --- counters and rates --------------------------------------------------------------
    def counters(self) -> list[Counter]:
        out = []
        for k, v in self.r.hgetall(keys.metrics_counters()).items():
            try:
                metric, *labels = json.loads(k)
                out.append(Counter(metric, tuple(labels), float(v)))
            except (ValueError, TypeError):
                continue
        return out

    def window_counts(self, seconds: int = 60, now: float | None = None) -> tuple[dict[tuple[str, str], int], float]:
        """Item outcomes per (queue, status) over about the last ``seconds``, and the span covered."""
        now = time.time() if now is None else now
        first, last = int((now - seconds) // WINDOW_SECONDS) + 1, int(now // WINDOW_SECONDS)
        with self.r.pipeline(transaction=False) as p:
            for b in range(first, last + 1):
                p.hgetall(keys.metrics_window(b))
            rows = p.execute()
        counts: dict[tuple[str, str], int] = {}
        for row in rows:
            for k, v in row.items():
                queue, _, status = _s(k).rpartition("|")
                counts[(queue, status)] = counts.get((queue, status), 0) + int(v)
        return counts, max(1e-9, now - first * WINDOW_SECONDS)

    # --- jobs --------------------------------------------------------------------------
    def running_jobs(self, limit: int = 20, now: float | None = None) -> list[JobProgress]:
        now = time.time() if now is None else now
        ids = [_s(j) for j in self.r.zrevrangebyscore(keys.active_jobs(), "+inf", now - ACTIVE_JOB_HORIZON,
                                                      start=0, num=limit * 5)]
        self.r.zremrangebyscore(keys.active_jobs(), "-inf", now - ACTIVE_JOB_HORIZON)
        if not ids:
            return []
        fields = ("status", "kind", "total", "succeeded", "failed", "started_at", "spec")
        with self.r.pipeline(transaction=False) as p:
            for j in ids:
                p.hmget(keys.job(j), fields)
            rows = p.execute()
        out, gone = [], []
        for job_id, row in zip(ids, rows, strict=True):
            st, kind, total, ok, bad, started, spec = (None if v is None else _s(v) for v in row)
            if st is None or st in ("completed", "failed", "cancelled", "budget_exceeded"):
                gone.append(job_id)
                continue
            started_at = float(started) if started else None
            done = int(ok or 0) + int(bad or 0)
            rate = done / (now - started_at) if started_at and now > started_at else None
            try:
                backend = json.loads(spec).get("backend") if spec else None
            except ValueError:
                backend = None
            out.append(JobProgress(id=job_id, kind=kind or "", status=st, backend=backend, total=int(total or 0),
                                   succeeded=int(ok or 0), failed=int(bad or 0), started_at=started_at,
                                   items_per_second=round(rate, 3) if rate is not None else None))
        if gone:
            self.r.zrem(keys.active_jobs(), *gone)
        return out[:limit]

    # --- everything ----------------------------------------------------------------------
    def snapshot(self, queues=ALL_QUEUES, window: int = 60, jobs: bool = True) -> Snapshot:
        now = time.time()
        depths = self.depths(queues)
        ages = self.oldest_ages(queues, now)
        workers = self.workers(now)
        counts, span = self.window_counts(window, now)
        states = []
        for q in queues:
            serving = [w for w in workers if q in w.queues]
            ok, bad = counts.get((q, "succeeded"), 0), counts.get((q, "failed"), 0)
            states.append(QueueState(
                name=q, depth=depths[q], oldest_age_seconds=_rounded(ages[q]),
                workers=len(serving), processes=sum(w.processes for w in serving),
                items_per_second=round((ok + bad) / span, 3), failed_per_second=round(bad / span, 3),
                error_rate=round(bad / (ok + bad), 6) if ok + bad else None))
        return Snapshot(at=now, window_seconds=window, queues=states, workers=workers,
                        jobs=self.running_jobs(now=now) if jobs else [], breakers=self.breakers(),
                        concurrency=self.concurrency())

    def concurrency(self) -> list[dict]:
        """Each target's in-flight cap summed over the live workers (learned, configured or pinned)."""
        from shared.concurrency import fleet_summary

        return [{"target": t, **v} for t, v in fleet_summary(self.r).items()]

    def breakers(self) -> list[dict]:
        """Circuit breaker state and fallback counts per backend:model target (shared/breaker.py)."""
        try:
            from shared.breaker import breaker_states
        except ImportError:
            return []
        return breaker_states(self.r)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
