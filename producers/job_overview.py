"""What `tidyq jobs` and the jobs page (`tidyq serve`) show of each job, read from Redis.

One row per job from the jobs index (JobStore.list_jobs) joined with what the status leaves out:
the numeric start/end times (for items/s), the cost summed by the workers into the job's tracking
hash, and the MLflow run id. Error types and failed items come from the results themselves:

- ``error_types`` reads each job's results once per process, incrementally: the order list only
  grows, so a cursor per job plus a counter is all a poll needs to read the new results only.
- ``failed_items`` pages through the order list from a cursor (a stable position, as
  JobStore.results_page uses) and keeps the failed results, bounded per request.

Read-only: nothing here writes a job key (list_jobs prunes index entries of expired jobs).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import redis

from shared import keys
from shared.jobs import JobState, JobStatus
from shared.store import JobNotFound, JobStore

_EXTRA_FIELDS = ("created_at", "started_at", "finished_at", "mlflow_run_id")
_READ_PAGE = 1000  # result ids read per round trip
SUCCEEDED = b'"status":"succeeded"'  # as ItemResult.to_json writes it


def _s(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value) -> float | None:
    text = _s(value)
    try:
        return float(text) if text else None
    except ValueError:
        return None


@dataclass
class JobRow:
    """One job as listed: counts, target, timing, rate and cost (None when not known)."""

    id: str
    kind: str
    status: str
    total: int
    succeeded: int
    failed: int
    backend: str | None
    model: str | None
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    items_per_second: float | None
    cost_usd: float | None
    mlflow_run_id: str | None
    error: str | None = None
    error_types: dict[str, int] = field(default_factory=dict)
    error_types_partial: bool = False  # still counting: not every result was read yet

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else (1.0 if self.status in _ENDED else 0.0)

    def to_json(self) -> dict:
        d = asdict(self)
        d["done"], d["fraction"] = self.done, round(self.fraction, 4)
        return d


_ENDED = {s.value for s in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)}


def _succeeded(raw: bytes | str) -> bool:
    return SUCCEEDED in raw if isinstance(raw, bytes) else SUCCEEDED.decode() in raw


def items_per_second(done: int, started: float | None, finished: float | None, now: float) -> float | None:
    """Finished items per second of the job's running time (to its end, or to now while it runs)."""
    if started is None:
        return None
    span = (finished or now) - started
    return round(done / span, 3) if span > 0 else None


class JobsReader:
    """Reads job rows, error types and failed items. One per process (it keeps the error counts)."""

    def __init__(self, client: redis.Redis, *, cached_jobs: int = 1024, error_read_budget: int = 100_000):
        self.r = client
        self.error_read_budget = error_read_budget
        self.store = JobStore(client)
        self._errors: OrderedDict[str, tuple[int, Counter]] = OrderedDict()
        self._cached_jobs = cached_jobs
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, redis_url: str | None = None) -> JobsReader:
        from shared.config import get_settings
        from shared.redisconn import get_redis

        s = get_settings()
        return cls(get_redis(redis_url or s.redis_url or s.default_redis_url))

    # --- rows ------------------------------------------------------------------------------
    def rows(self, *, statuses: Iterable[str] | None = None, kind: str | None = None, limit: int = 50,
             with_errors: bool = False, now: float | None = None) -> list[JobRow]:
        """The newest jobs first, as rows (``with_errors``: their error types too)."""
        jobs = self.store.list_jobs(statuses=statuses, kind=kind, limit=limit)
        return self._rows(jobs, with_errors=with_errors, now=now)

    def rows_of(self, job_ids: Iterable[str], *, with_errors: bool = False) -> list[JobRow]:
        """Rows of these jobs, in the order given; ids whose job expired are left out."""
        jobs = []
        for job_id in job_ids:
            try:
                jobs.append(self.store.status(job_id))
            except JobNotFound:
                continue
        return self._rows(jobs, with_errors=with_errors)

    def row(self, job_id: str, *, with_errors: bool = True) -> JobRow:
        """One job's row; JobNotFound when it does not exist (or expired)."""
        return self._rows([self.store.status(job_id)], with_errors=with_errors)[0]

    def _rows(self, jobs: list[JobStatus], *, with_errors: bool, now: float | None = None) -> list[JobRow]:
        now = time.time() if now is None else now
        with self.r.pipeline(transaction=False) as p:
            for st in jobs:
                p.hmget(keys.job(st.id), _EXTRA_FIELDS)
                p.hget(keys.job_tracking(st.id), "cost_usd")
            replies = p.execute()
        out, budget = [], self.error_read_budget  # results read for error types, for all these rows together
        for st, extra, cost in zip(jobs, replies[0::2], replies[1::2], strict=True):
            created, started, finished = (_float(v) for v in extra[:3])
            done = st.counts.succeeded + st.counts.failed
            cost_usd = _float(cost)
            row = JobRow(id=st.id, kind=st.kind, status=st.status.value, total=st.counts.total,
                         succeeded=st.counts.succeeded, failed=st.counts.failed, backend=st.backend, model=st.model,
                         created_at=created, started_at=started, finished_at=finished,
                         items_per_second=items_per_second(done, started, finished, now),
                         cost_usd=cost_usd if cost_usd else None,  # 0 means no call was priced
                         mlflow_run_id=_s(extra[3]), error=st.error)
            if with_errors and row.failed:
                before = self.counted(st.id)
                row.error_types = self.error_types(st.id, budget)
                budget -= self.counted(st.id) - before
                row.error_types_partial = self.counted(st.id) < done
            out.append(row)
        return out

    # --- error types -------------------------------------------------------------------------
    def error_types(self, job_id: str, budget: int | None = None) -> dict[str, int]:
        """Failed results per error type, most frequent first. Reads only results this process
        has not read yet (the job's order list only grows), at most ``budget`` (default
        ``error_read_budget``) per call so one poll stays cheap on a huge job; ``counted(job_id)``
        says how many were read so far."""
        with self._lock:
            offset, counts = self._errors.pop(job_id, (0, Counter()))
        order, results = keys.job_order(job_id), keys.job_results(job_id)
        budget = self.error_read_budget if budget is None else budget
        while budget > 0:
            ids = self.r.lrange(order, offset, offset + min(_READ_PAGE, budget) - 1)
            if not ids:
                break
            for result in self._failed(results, ids):
                counts[(result.get("error") or {}).get("type") or "unknown"] += 1
            offset += len(ids)
            budget -= len(ids)
        with self._lock:
            self._errors[job_id] = (offset, counts)
            while len(self._errors) > self._cached_jobs:
                self._errors.popitem(last=False)
        return dict(counts.most_common())

    def counted(self, job_id: str) -> int:
        """How many of the job's results error_types has read in this process."""
        with self._lock:
            return self._errors.get(job_id, (0, Counter()))[0]

    def _failed(self, results_key: str, ids: list) -> list[dict]:
        """The failed ones of these results. Most results succeed: those are recognised by the
        compact JSON ItemResult.to_json writes without being parsed (any other form is parsed)."""
        out = []
        for raw in self.r.hmget(results_key, ids):
            if raw is None or _succeeded(raw):
                continue
            result = json.loads(raw)
            if result.get("status") == "failed":
                out.append(result)
        return out

    # --- failed items ------------------------------------------------------------------------
    def failed_items(self, job_id: str, *, cursor: int = 0, limit: int = 50,
                     max_scan: int = 20_000) -> tuple[list[dict], int | None]:
        """Up to ``limit`` failed results from position ``cursor`` of the job's arrival order.
        Returns (results, next cursor); the cursor is None when every stored result was read.
        At most ``max_scan`` results are read per call, so a page of a huge job stays cheap."""
        if not self.r.exists(keys.job(job_id)):
            raise JobNotFound(job_id)
        order, results = keys.job_order(job_id), keys.job_results(job_id)
        found: list[dict] = []
        position, scanned = max(0, cursor), 0
        while len(found) < limit and scanned < max_scan:
            ids = self.r.lrange(order, position, position + min(_READ_PAGE, max_scan - scanned) - 1)
            if not ids:
                return found, None
            for i, raw in enumerate(self.r.hmget(results, ids)):
                result = json.loads(raw) if raw is not None else {}
                if result.get("status") == "failed":
                    found.append(result)
                    if len(found) == limit:
                        position += i + 1
                        break
            else:
                position += len(ids)
            scanned += len(ids)
        more = self.r.llen(order) > position
        return found, position if more else None
