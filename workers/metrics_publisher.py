"""Worker side of the metrics: every worker process pushes its counter deltas into Redis.

Why Redis and not Prometheus' multiprocess mode: multiprocess mode sums the prefork children of
ONE machine (through a shared directory) and still needs one scrape target per machine. tidyq
scales by adding worker processes on more machines against the same Redis, so each process adds
its deltas to one cluster-wide hash (HINCRBY / HINCRBYFLOAT, one pipeline per flush) and a
single exporter (`tidyq metrics`) reads that hash. Totals survive worker restarts (a Prometheus
counter never goes backwards when a child is recycled), and a flush that fails (Redis down) is
retried with the next one: deltas are taken against what was last *published*, not last seen.

What is published, per process, every ``metrics_interval`` seconds (and after each chunk when
the interval has passed):
- the in-process LM call aggregate of shared.metrics (per backend and model),
- item outcomes (per queue, backend, status) counted by the chunk runner through record_item(),
- 10-second buckets of item outcomes per queue, so `tidyq queues --once` has a recent rate,
- the ids of jobs whose chunks ran (the running-jobs view).
Per worker node (main process), every ``heartbeat_interval`` seconds: queues served, pool size.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from typing import Any

from celery import signals

from shared import keys
from shared.metrics import LATENCY_BUCKETS_MS, MetricsRegistry
from shared.metrics import registry as default_registry
from shared.telemetry import get_logger

WINDOW_SECONDS = keys.METRICS_WINDOW_SECONDS  # width of one rate bucket
WINDOW_TTL = 600  # buckets are kept this long


def field(metric: str, *labels: str) -> str:
    """The hash field of one series: a JSON list, so any label text (model ids with ':' or '/')
    round-trips exactly."""
    return json.dumps([metric, *labels], separators=(",", ":"))


def registry_totals(snapshot: list[dict]) -> dict[str, float]:
    """shared.metrics snapshot rows -> {field: total}."""
    out: dict[str, float] = {}
    for row in snapshot:
        b, m = row["backend"], row["model"] or ""
        out[field("lm_calls", b, m)] = row["calls"]
        for err, n in row["errors"].items():
            out[field("lm_errors", b, m, err)] = n
        out[field("cache_hits", b, m)] = row["cache_hits"]
        out[field("cache_misses", b, m)] = row["cache_misses"]
        out[field("lm_attempts", b, m)] = row["attempts"]
        out[field("lm_retries", b, m)] = row["retries"]
        out[field("tokens", b, m, "input")] = row["input_tokens"]
        out[field("tokens", b, m, "output")] = row["output_tokens"]
        out[field("cost_usd", b, m)] = float(row["cost_usd"])
        out[field("latency_ms_sum", b, m)] = float(row["latency_ms_sum"])
        bounds = [str(x) for x in LATENCY_BUCKETS_MS] + ["+Inf"]
        for bound, n in zip(bounds, row["latency_buckets"], strict=False):
            out[field("latency_bucket", b, m, bound)] = n
        out[field("validation_failures", b, m)] = row["validation_failures"]
        out[field("rate_limit_wait_seconds", b, m)] = float(row["rate_limit_wait_s"])
    return out


class Publisher:
    """One per process. record_item() is called from chunk threads; flush() from the timer
    thread and after chunks. Holds no state that would be wrong after a fork (get() builds a
    new one per pid)."""

    def __init__(self, client, registry: MetricsRegistry | None = None, interval: float = 2.0):
        self.r = client
        self.registry = registry or default_registry
        self.interval = interval
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._items: Counter[tuple[str, str, str]] = Counter()
        self._window: Counter[tuple[int, str, str]] = Counter()
        self._jobs: dict[str, float] = {}
        self._jobs_written: dict[str, float] = {}  # job id -> when this process last wrote it to Redis
        self._item_errors: Counter[tuple[str, str, str]] = Counter()
        self._published: dict[str, float] = {}
        self._last_flush = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.flushes = 0
        self.failed_flushes = 0

    # --- recording (cheap, in memory) ---------------------------------------------------
    def record_item(self, queue: str, backend: str, status: str, error_type: str | None = None) -> None:
        bucket = int(time.time() // WINDOW_SECONDS)
        with self._lock:
            self._items[(queue, backend, status)] += 1
            self._window[(bucket, queue, status)] += 1
            if error_type:
                self._item_errors[(queue, backend, error_type)] += 1

    def note_job(self, job_id: str, *, at_once: bool = True) -> None:
        """A chunk of ``job_id`` starts here. The first one this process sees in an interval goes to
        the running-jobs set at once (one ZADD), so `tidyq_jobs_running` counts the job from its first
        chunk on; later ones ride with the next flush. ``at_once=False`` (a one-item predict job, over
        in milliseconds: the ZADD would be a round trip before every predict) always rides."""
        now = time.time()
        with self._lock:
            fresh = at_once and now - self._jobs_written.get(job_id, 0.0) >= self.interval
            if not fresh:
                self._jobs[job_id] = now
                return
            self._jobs_written[job_id] = now
            if len(self._jobs_written) > 10_000:  # forget long-gone jobs
                self._jobs_written = {j: t for j, t in self._jobs_written.items() if now - t < 3600}
        try:
            self.r.zadd(keys.active_jobs(), {job_id: now})
        except Exception:  # Redis away: the next flush writes it
            with self._lock:
                self._jobs[job_id] = now

    # --- publishing ----------------------------------------------------------------------
    def totals(self) -> dict[str, float]:
        out = registry_totals(self.registry.snapshot())
        with self._lock:
            for (queue, backend, status), n in self._items.items():
                out[field("items", queue, backend, status)] = n
            for (queue, backend, error), n in self._item_errors.items():
                out[field("item_errors", queue, backend, error)] = n
        return out

    def flush(self) -> bool:
        """Push everything not yet published. Returns False when Redis refused (kept for later)."""
        with self._flush_lock:
            self._last_flush = time.monotonic()
            current = self.totals()
            with self._lock:
                window, self._window = self._window, Counter()
                jobs, self._jobs = self._jobs, {}
            deltas: dict[str, float] = {}
            for name, value in current.items():
                before = self._published.get(name, 0)
                # totals only grow within a process (nothing resets the registry in a worker);
                # should one shrink anyway, publish it as new counts rather than go negative
                delta = value - before if value >= before else value
                if delta:
                    deltas[name] = delta
            if not deltas and not window and not jobs:
                return True
            try:
                with self.r.pipeline(transaction=False) as p:
                    counters = keys.metrics_counters()
                    for name, delta in deltas.items():
                        if isinstance(current[name], float):  # never HINCRBY a float field
                            p.hincrbyfloat(counters, name, delta)
                        else:
                            p.hincrby(counters, name, int(delta))
                    for (bucket, queue, status), n in window.items():
                        key = keys.metrics_window(bucket)
                        p.hincrby(key, f"{queue}|{status}", n)
                        p.expire(key, WINDOW_TTL)
                    if jobs:
                        p.zadd(keys.active_jobs(), jobs)
                    p.execute()
            except Exception as exc:  # Redis away: keep the deltas, try again next flush
                with self._lock:
                    self._window.update(window)
                    for job_id, t in jobs.items():
                        self._jobs.setdefault(job_id, t)
                self.failed_flushes += 1
                get_logger().warning("metrics_flush_failed", error=type(exc).__name__)
                return False
            self._published = current
            self.flushes += 1
            return True

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.interval:
            self.flush()

    def start(self) -> Publisher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tidyq-metrics", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # never let the timer die
                pass


def configured_backends() -> list[str]:
    """Backends this worker's environment can serve (what `tidyq doctor` probes). The same test
    AUTO applies (shared.backends.auto), minus the model: jobs may bring their own."""
    import os as _os

    from shared.backends.auto import aws_credentials_resolve, is_bedrock_model, provider_key_env
    from shared.config import get_settings

    s = get_settings()
    out = ["mock"]
    per_target = _per_target_backends(s)
    if s.gateway_url or "gateway" in per_target:
        out.append("gateway")
    key_env = provider_key_env(s.model) if s.model and not is_bedrock_model(s.model) else None
    api_key = s.api_key.get_secret_value() if s.api_key is not None else ""
    if api_key or s.api_base or (key_env and _os.environ.get(key_env)) or "direct" in per_target or (
            not s.model and any(k.endswith("_API_KEY") and v for k, v in _os.environ.items())):
        out.append("direct")
    if aws_credentials_resolve():
        out.append("bedrock")
    return sorted(out)


def _per_target_backends(s) -> set[str]:
    """Backends configured per target (TIDYQ_TARGET_OPTIONS): direct with an api_base or a key variable
    that is set, gateway with a gateway_url. They count as configured: the submit check must not refuse
    their jobs."""
    import os as _os

    out = set()
    for tid, options in (s.target_options or {}).items():
        backend = str(tid).partition(":")[0]
        if not isinstance(options, dict):
            continue
        if backend == "direct" and (options.get("api_base") or _os.environ.get(str(options.get("api_key_env") or ""))):
            out.add("direct")
        if backend == "gateway" and options.get("gateway_url"):
            out.add("gateway")
    return out


class Heartbeat:
    """The worker node's liveness record: which queues it serves and with how many processes.
    A node that dies without a shutdown simply stops refreshing and drops out after 3 beats."""

    def __init__(self, client, hostname: str, queues: list[str], processes: int | None, interval: float = 5.0):
        self.r, self.hostname, self.queues, self.processes = client, hostname, queues, processes
        self.interval = interval
        self.backends: list[str] | None = None  # found on the heartbeat thread (boto3 may be slow)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        key = keys.worker_heartbeat(self.hostname)
        now = time.time()
        mapping = {"queues": ",".join(self.queues), "processes": self.processes or 0,
                   "pid": os.getpid(), "host": socket.gethostname(), "seen": repr(now)}
        if self.backends is not None:
            mapping["backends"] = ",".join(self.backends)
        with self.r.pipeline(transaction=True) as p:
            p.hset(key, mapping=mapping)
            p.expire(key, max(3, int(self.interval * 3)))
            p.zadd(keys.workers_seen(), {self.hostname: now})
            p.execute()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="tidyq-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            self.backends = configured_backends()
            self.beat()
        except Exception as exc:
            get_logger().warning("configured_backends_unknown", error=str(exc))
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                pass

    def stop(self) -> None:
        self._stop.set()
        try:
            with self.r.pipeline(transaction=True) as p:
                p.delete(keys.worker_heartbeat(self.hostname))
                p.zrem(keys.workers_seen(), self.hostname)
                p.execute()
        except Exception:
            pass


# --- per-process singletons, wired to Celery's signals ------------------------------------
_publishers: dict[int, Publisher] = {}
_heartbeat: Heartbeat | None = None
_guard = threading.Lock()


_clients: dict[int, object] = {}


def _redis():
    """A client of our own per process: short timeouts and no retries. Metrics are best effort
    (a failed flush is redone by the next one), and a worker stopping while Redis is down must
    not sit in redis-py's retry backoff."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from workers.celery_app import broker_url

    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        client = _clients[pid] = redis.Redis.from_url(broker_url(), socket_timeout=2, socket_connect_timeout=2,
                                                      retry=Retry(NoBackoff(), 0))
    return client


def get() -> Publisher:
    """This process's publisher (started on first use: prefork children, solo and threads pools)."""
    pid = os.getpid()
    pub = _publishers.get(pid)
    if pub is None:
        with _guard:
            pub = _publishers.get(pid)
            if pub is None:
                from shared.config import get_settings

                pub = _publishers[pid] = Publisher(_redis(), interval=get_settings().metrics_interval).start()
    return pub


def record_item(queue: str, backend: str, status: str, error_type: str | None = None) -> None:
    """Called by the chunk runner once per item result (``error_type``: a failed item's result error type)."""
    get().record_item(queue, backend, status, error_type)


def _job(args: Any) -> dict:
    payload = args[0] if args else None
    job = payload.get("job") if isinstance(payload, dict) else None
    return job if isinstance(job, dict) else {}


def _job_id(args: Any) -> str | None:
    job_id = _job(args).get("id")
    return job_id if isinstance(job_id, str) else None


@signals.task_prerun.connect
def _on_task_prerun(sender=None, args=None, **_):
    job_id = _job_id(args)
    if job_id:
        get().note_job(job_id, at_once=_job(args).get("kind") != "predict")


@signals.task_postrun.connect
def _on_task_postrun(**_):
    try:
        get().maybe_flush()
    except Exception:
        pass


@signals.worker_process_shutdown.connect
def _on_process_shutdown(**_):
    pub = _publishers.get(os.getpid())
    if pub is not None:
        pub.stop()


@signals.worker_ready.connect
def _on_worker_ready(sender=None, **_):
    global _heartbeat
    from shared.config import get_settings
    from workers.signals import _consumed_queues

    try:
        processes = getattr(getattr(sender, "controller", None), "concurrency", None)
        _heartbeat = Heartbeat(_redis(), sender.hostname, _consumed_queues(sender), processes,
                               get_settings().heartbeat_interval).start()
    except Exception as exc:  # liveness is informative; never stop a worker over it
        get_logger().warning("heartbeat_not_started", error=str(exc))


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_):
    pub = _publishers.get(os.getpid())  # solo/threads pools ran tasks in this process
    if pub is not None:
        pub.stop()
    if _heartbeat is not None:
        _heartbeat.stop()
