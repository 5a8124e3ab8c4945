"""Experiment tracking: one MLflow run per batch or optimize job, metrics logged in batches.

Rules this module keeps:
- Never per item: the chunk runner hands results to :func:`record_item` (memory), :func:`flush`
  adds a chunk's aggregate to a Redis hash in one pipeline, and :func:`finish_job` writes the
  whole run (params, every metric) in one ``log_batch`` when the job has ended. Many workers may
  run one job's chunks; the aggregate in Redis is what they share, and an HSETNX claim makes
  exactly one of them write the run.
- A tracking server that is down never fails or slows a job: MLflow's own HTTP retries are off,
  its timeout is short, the first failure turns tracking off for ``mlflow_down_backoff_seconds``
  and logs one warning per process; metrics of that window are dropped.
- DSPy traces go through ``mlflow.dspy.autolog`` sampled at ``trace_sample_rate``; autolog calls
  ``dspy.configure``, so :func:`init_worker_tracing` runs once per worker process, never per task.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shared import keys
from shared.config import Settings, get_settings
from shared.jobs import TERMINAL_STATES
from shared.mlflow_store import ensure_store
from shared.store import error_types
from shared.telemetry import get_logger, redact

# latency histogram: bucket k holds latencies up to 1.1**k ms (10% resolution up to ~10 minutes)
_LAT_BASE = 1.1
_LAT_MAX_BUCKET = 150


# --- the gate: is MLflow usable right now? ---------------------------------------------------

class TrackingGate:
    """Runs MLflow calls for tracking; a failure drops them for a while, with one warning."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.warned = False
        self.dropped = 0

    def tracking_uri(self, settings: Settings | None = None) -> str | None:
        return (settings or get_settings()).mlflow_tracking_uri

    def available(self, settings: Settings | None = None) -> bool:
        s = settings or get_settings()
        uri = s.mlflow_tracking_uri
        if not uri:
            return False
        if time.monotonic() < self._down_until:
            return False
        parts = urlsplit(uri)
        if parts.scheme in ("http", "https"):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                with socket.create_connection((parts.hostname, port), timeout=min(1.0, s.mlflow_request_timeout)):
                    pass
            except OSError as exc:
                self.mark_down(exc, s)
                return False
        return True

    def mark_down(self, exc: BaseException, settings: Settings | None = None) -> None:
        s = settings or get_settings()
        with self._lock:
            self._down_until = time.monotonic() + s.mlflow_down_backoff_seconds
            self.dropped += 1
            first = not self.warned
            self.warned = True
        if first:
            try:
                self._warn(exc, s)
            except Exception:
                pass  # a closed log stream must not turn a dropped metric into a failed job

    @staticmethod
    def _warn(exc: BaseException, s: Settings) -> None:
            get_logger().warning("mlflow_unavailable", tracking_uri=redact(s.mlflow_tracking_uri or ""),
                                 error=redact(str(exc))[:300],
                                 note=f"tracking metrics are dropped; retrying after {s.mlflow_down_backoff_seconds}s")

    def run(self, fn: Callable[[], Any], settings: Settings | None = None) -> Any:
        """``fn()`` or None when MLflow is off or failing (never raises)."""
        s = settings or get_settings()
        if not self.available(s):
            return None
        try:
            return fn()
        except Exception as exc:
            self.mark_down(exc, s)
            return None

    def reset(self) -> None:
        with self._lock:
            self._down_until = 0.0
            self.warned = False
            self.dropped = 0


gate = TrackingGate()


def configure_mlflow_client(settings: Settings | None = None) -> None:
    """Fail fast: no MLflow HTTP retries and a short timeout (set before the first request)."""
    s = settings or get_settings()
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(s.mlflow_request_timeout)))


def mlflow_client(settings: Settings | None = None):
    from mlflow import MlflowClient

    s = settings or get_settings()
    configure_mlflow_client(s)
    uri = s.mlflow_tracking_uri

    def touch() -> None:  # builds the tracking and the registry store (their schema on a fresh database)
        fresh = MlflowClient(tracking_uri=uri, registry_uri=uri)
        fresh.search_experiments(max_results=1)
        fresh.search_registered_models(max_results=1)

    ensure_store(uri, touch)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def artifact_root(settings: Settings) -> str | None:
    """Where new experiments keep artifacts: the setting, else next to a sqlite store file."""
    if settings.mlflow_artifact_root:
        return settings.mlflow_artifact_root
    uri = settings.mlflow_tracking_uri or ""
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):]
        return "file://" + os.path.join(os.path.dirname(os.path.abspath(db)), "mlartifacts")
    return None


_experiments: dict[tuple[str, str], str] = {}


def experiment_id(client, settings: Settings) -> str:
    key = (settings.mlflow_tracking_uri or "", settings.mlflow_experiment)
    if key in _experiments:
        return _experiments[key]
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(settings.mlflow_experiment, artifact_location=artifact_root(settings))
        except Exception:
            exp = client.get_experiment_by_name(settings.mlflow_experiment)  # another process made it
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    _experiments[key] = exp_id
    return exp_id


# --- one run per job -------------------------------------------------------------------------

def _param_value(value: Any) -> str:
    return redact(str(value))[:6000]


def safe_metric_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)


class JobRun:
    """An MLflow run for one job. Metrics are buffered and sent with :meth:`flush` in one
    ``log_batch``. When MLflow is off or down every method is a cheap no-op."""

    def __init__(self, client, run_id: str | None, settings: Settings):
        self.client, self.run_id, self.settings = client, run_id, settings
        self._metrics: list[tuple[str, float, int | None]] = []

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.active:
            return
        for name, value in metrics.items():
            if value is None:
                continue
            try:
                self._metrics.append((safe_metric_name(name), float(value), step))
            except (TypeError, ValueError):
                continue

    def flush(self, at: float | None = None) -> None:
        """Send the buffered metrics, stamped ``at`` (Unix seconds, default now)."""
        if not self.active or not self._metrics:
            return
        from mlflow.entities import Metric

        now = int((at or time.time()) * 1000)
        batch, self._metrics = self._metrics, []
        metrics = [Metric(k, v, now, step or 0) for k, v, step in batch]
        gate.run(lambda: [self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])
                          for i in range(0, len(metrics), 1000)], self.settings)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> bool:
        if not self.active:
            return False
        return gate.run(lambda: self.client.log_artifacts(self.run_id, local_dir, artifact_path) or True,
                        self.settings) is True

    def set_tags(self, tags: dict[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        gate.run(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, _param_value(v)) for k, v in tags.items()]),
                 self.settings)

    def finish(self, status: str = "FINISHED", end_time: float | None = None) -> bool:
        """End the run; ``end_time`` (Unix seconds) is when the job really ended (default: now).
        True when MLflow took it."""
        if not self.active:
            return False
        self.flush()
        end_ms = int(end_time * 1000) if end_time else None
        return gate.run(lambda: self.client.set_terminated(self.run_id, status=status, end_time=end_ms) or True,
                        self.settings) is True


def start_job_run(job_id: str, kind: str, params: dict[str, Any], *, tags: dict[str, Any] | None = None,
                  settings: Settings | None = None, run_name: str | None = None,
                  start_time: float | None = None) -> JobRun:
    """A new RUNNING run named after the job (no-op JobRun when MLflow is off or down).
    ``start_time``: Unix seconds the job really started (default: now)."""
    s = settings or get_settings()

    def create() -> JobRun:
        from mlflow.entities import Param

        client = mlflow_client(s)
        exp = experiment_id(client, s)
        all_tags = {"tidyq.job_id": job_id, "tidyq.kind": kind, **(tags or {})}
        run = client.create_run(exp, run_name=run_name or f"{kind}-{job_id[:12]}",
                                start_time=int(start_time * 1000) if start_time else None,
                                tags={k: _param_value(v) for k, v in all_tags.items()})
        items = [Param(k, _param_value(v)) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[i:i + 100])
        return JobRun(client, run.info.run_id, s)

    return gate.run(create, s) or JobRun(None, None, s)


# --- batch jobs: per-item numbers aggregated per chunk in Redis ------------------------------

def latency_bucket(latency_ms: float) -> int:
    if latency_ms <= 1.0:
        return 0
    return min(_LAT_MAX_BUCKET, math.ceil(math.log(latency_ms) / math.log(_LAT_BASE)))


def percentile_from_histogram(hist: dict[int, int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (<= 10% above the true value)."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            return round(_LAT_BASE ** k, 3)
    return round(_LAT_BASE ** max(hist), 3)


@dataclass
class _JobBuffer:
    counters: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        if value:
            self.counters[name] = self.counters.get(name, 0.0) + value


_buffers: dict[str, _JobBuffer] = {}
_buffers_lock = threading.Lock()


def record_item(job_id: str, result: Any, stats: Any = None, program: Any = None) -> None:
    """Remember one item's numbers in memory (no I/O). ``result``: ItemResult or its dict;
    ``stats``: the item's CallStats; ``program``: the ResolvedProgram that served it."""
    if hasattr(result, "model_dump"):  # an ItemResult: its fields as they are (a model_dump per item costs)
        error = result.error
        r = {"status": result.status, "latency_ms": result.latency_ms, "cached": result.cached,
             "attempts": result.attempts, "error": {"type": error.type} if error is not None else None}
    else:
        r = dict(result)
    ok = r.get("status") == "succeeded"
    latency = float(r.get("latency_ms") or 0.0)
    with _buffers_lock:
        b = _buffers.setdefault(job_id, _JobBuffer())
        b.add("items", 1)
        b.add("ok" if ok else "failed", 1)
        b.add(f"lat:{latency_bucket(latency)}", 1)
        b.add("latency_ms_sum", latency)
        b.add("cached_items", 1 if r.get("cached") else 0)
        b.add("attempts", int(r.get("attempts") or 0))
        if stats is not None:
            b.add("calls", stats.calls)
            b.add("cache_hits", stats.cache_hits)
            b.add("retries", stats.retries)
            b.add("input_tokens", stats.input_tokens)
            b.add("output_tokens", stats.output_tokens)
            b.add("cost_usd", stats.cost_usd or 0.0)
            b.add("validation_failures", stats.validation_failures)
        error_type = (r.get("error") or {}).get("type") if not ok else None
        if error_type in ("ValidationFailed",) and not (stats and stats.validation_failures):
            b.add("validation_failures", 1)
        if program is not None:
            prefix = f"v:{program.name}:{program.version}:"
            b.add(prefix + "items", 1)
            b.add(prefix + ("ok" if ok else "failed"), 1)
            b.add(prefix + "latency_ms_sum", latency)
            vf = ((stats.validation_failures if stats is not None else 0)
                  or (1 if error_type == "ValidationFailed" else 0))
            b.add(prefix + "validation_failures", vf)


def take(job_id: str) -> dict[str, float]:
    """This process's buffered numbers of ``job_id``, handed over (the chunk runner sends them with
    the results they belong to: JobStore.record_results(counters=), one round trip)."""
    with _buffers_lock:
        b = _buffers.pop(job_id, None)
    return b.counters if b is not None else {}


def record_versions(counters: dict[str, float], redis_client=None) -> None:
    """The per-version serving stats ("v:<model>:<version>:<counter>") of taken numbers."""
    versions: dict[tuple[str, int], dict[str, float]] = {}
    for name, value in counters.items():
        if name.startswith("v:"):
            _, model, version, counter = name.split(":", 3)
            versions.setdefault((model, int(version)), {})[counter] = value
    if versions:
        from shared.version_stats import record_version_stats

        record_version_stats(versions, redis_client=redis_client or _redis())


def flush(job_id: str, redis_client=None, ttl_seconds: int | None = None) -> int:
    """Add this process's buffered numbers of ``job_id`` to Redis (one pipeline) and to the
    per-version serving stats of the models that served them. Returns counters written."""
    counters = take(job_id)
    if not counters:
        return 0
    r = redis_client or _redis()
    key = keys.job_tracking(job_id)
    with r.pipeline(transaction=False) as p:
        for name, value in counters.items():
            # always a float increment: HINCRBY fails on a field an earlier HINCRBYFLOAT left fractional
            # (a latency sum that happened to be whole, then one that was not)
            p.hincrbyfloat(key, name, value)
        p.expire(key, ttl_seconds or get_settings().result_ttl_seconds)
        p.execute()
    record_versions(counters, r)
    return len(counters)


def _redis():
    from shared.redisconn import get_redis

    s = get_settings()
    return get_redis(s.redis_url or s.default_redis_url)


def _num(h: dict, name: str) -> float:
    return float(h.get(name, 0) or 0)


def job_metrics(agg: dict[str, str], job: dict[str, str]) -> dict[str, float]:
    """The run's metrics from the job hash and its aggregate hash."""
    hist = {int(k[4:]): int(float(v)) for k, v in agg.items() if k.startswith("lat:")}
    items = _num(agg, "items")
    calls = _num(agg, "calls")
    created, finished = _num(job, "created_at"), _num(job, "finished_at")
    started = _num(job, "started_at") or created
    done = _num(job, "succeeded") + _num(job, "failed")
    m = {
        "items": float(job.get("total", items) or 0),
        "succeeded": _num(job, "succeeded"),
        "failed": _num(job, "failed"),
        "latency_p50_ms": percentile_from_histogram(hist, 0.50),
        "latency_p95_ms": percentile_from_histogram(hist, 0.95),
        "latency_mean_ms": _num(agg, "latency_ms_sum") / items if items else None,
        "input_tokens": _num(agg, "input_tokens"),
        "output_tokens": _num(agg, "output_tokens"),
        "cost_usd": _num(agg, "cost_usd"),
        "lm_calls": calls,
        "attempts": _num(agg, "attempts"),
        "cache_hit_rate": (_num(agg, "cache_hits") / calls if calls
                           else (_num(agg, "cached_items") / items if items else 0.0)),
        "retries": _num(agg, "retries"),
        "validation_failures": _num(agg, "validation_failures"),
        "duration_s": finished - started if finished and started else None,
        "queue_wait_s": started - created if started and created else None,
        "items_per_second": done / (finished - started) if finished and started and finished > started else None,
    }
    for name, count in error_types(job).items():  # exact counts kept by the store's Lua script
        m[f"errors.{safe_metric_name(name)}"] = float(count)
    for name, value in agg.items():  # per served version
        if name.startswith("v:"):
            _, model, version, counter = name.split(":", 3)
            m[f"version.{model}.{version}.{counter}"] = float(value)
    for name in [k for k in m if k.startswith("version.") and k.endswith(".items")]:
        base = name[: -len("items")]
        n = m[name] or 0.0
        m[base + "error_rate"] = (m.get(base + "failed") or 0.0) / n if n else 0.0
        m[base + "latency_mean_ms"] = (m.get(base + "latency_ms_sum") or 0.0) / n if n else 0.0
    return {k: v for k, v in m.items() if v is not None}


def _job_hash(r, job_id: str) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in r.hgetall(keys.job(job_id)).items()}


def _run_params(job_id: str, job: dict[str, str]) -> dict[str, Any]:
    import json

    spec = json.loads(job.get("spec") or "{}")
    return {"job_id": job_id, "kind": job.get("kind"), "backend": spec.get("backend"), "model": spec.get("model"),
            "signature": spec.get("signature"), "program": spec.get("program"), "chunk_size": spec.get("chunk_size"),
            "items": job.get("total"),
            "fallback": ",".join(f"{t['backend']}:{t.get('model') or ''}" for t in spec.get("fallback") or []) or None}


def _tracked(job: dict[str, str], s: Settings) -> bool:
    """Batch jobs get a run (optimize jobs write their own; a one-item predict job gets none)."""
    return bool(job) and job.get("kind") == "batch" and bool(s.mlflow_tracking_uri)


def _create_job_run(r, job_id: str, job: dict[str, str], s: Settings) -> str | None:
    """Create the job's RUNNING run, started at the job's real start; the caller holds the claim.
    Returns the job's run id: ours, or the one that got there first (ours is then deleted)."""
    started = float(job.get("started_at") or job.get("created_at") or time.time())
    run = start_job_run(job_id, "batch", _run_params(job_id, job), tags={"tidyq.status": "running"}, settings=s,
                        start_time=started)
    if not run.active:
        r.hdel(keys.job(job_id), "mlflow_run_claim")  # MLflow away: whoever ends the job tries again
        return None
    if r.hsetnx(keys.job(job_id), "mlflow_run_id", run.run_id):
        return run.run_id
    gate.run(lambda: run.client.delete_run(run.run_id), s)  # a slow creator lost to the job's end
    return _s(r.hget(keys.job(job_id), "mlflow_run_id"))


def start_job(job_id: str, redis_client=None, settings: Settings | None = None) -> str | None:
    """The first chunk of a job to run (fleet-wide, an HSETNX claim) creates the job's MLflow run,
    RUNNING from the job's start. One Redis call for every later chunk. Returns the new run's id."""
    s = settings or get_settings()
    if not s.mlflow_tracking_uri:
        return None
    r = redis_client or _redis()
    if not r.hsetnx(keys.job(job_id), "mlflow_run_claim", "1"):
        return None
    job = _job_hash(r, job_id)
    if not _tracked(job, s) or job.get("mlflow_run_id"):
        return job.get("mlflow_run_id")
    return _create_job_run(r, job_id, job, s)


_executors: dict[int, ThreadPoolExecutor] = {}


def start_job_soon(job_id: str, redis_client=None, settings: Settings | None = None) -> Future | None:
    """:func:`start_job` on this process's tracking thread: a chunk never waits for MLflow (a slow
    or hung tracking server, importing mlflow). Returns the Future, or None when tracking is off."""
    s = settings or get_settings()
    if not s.mlflow_tracking_uri:
        return None
    return _tracking_thread().submit(_quietly, start_job, job_id, redis_client, s)


def drain(timeout: float = 10.0) -> bool:
    """Wait until this process's queued tracking work is done (shutdown, tests). True when it is."""
    try:
        _tracking_thread().submit(lambda: None).result(timeout=timeout)
        return True
    except Exception:
        return False


def _tracking_thread() -> ThreadPoolExecutor:
    """This process's one tracking thread (MLflow calls in order, never on a chunk's thread)."""
    pid = os.getpid()  # a thread pool must not cross a fork
    executor = _executors.get(pid)
    if executor is None:
        executor = _executors[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidyq-tracking")
    return executor


def _quietly(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # tracking never fails a job; say why once in the log
        get_logger().warning("job_tracking_failed", error=redact(str(exc))[:300])
        return None


def log_progress(job_id: str, job: dict[str, str], r, s: Settings, now: float | None = None) -> bool:
    """Stepped progress metrics (step = items done) on the running job's run, at most once per
    ``mlflow_progress_interval`` across every worker (a SET NX with that TTL decides who logs)."""
    run_id = job.get("mlflow_run_id")
    if not run_id or not r.set(keys.job_mlflow_progress(job_id), "1", nx=True,
                               px=max(1, int(s.mlflow_progress_interval * 1000))):
        return False
    now = time.time() if now is None else now
    ok, bad = _num(job, "succeeded"), _num(job, "failed")
    started = _num(job, "started_at") or _num(job, "created_at")
    run = JobRun(mlflow_client(s) if gate.available(s) else None, run_id, s)
    if run.client is None:
        return False
    run.log_metrics({"progress.done": ok + bad, "progress.succeeded": ok, "progress.failed": bad,
                     "progress.fraction": (ok + bad) / _num(job, "total") if _num(job, "total") else 1.0,
                     "progress.items_per_second": (ok + bad) / (now - started) if started and now > started else 0.0},
                    step=int(ok + bad))
    run.flush(at=now)
    return True


def _wait_for_run_id(r, job_id: str, s: Settings) -> str | None:
    """Another worker is creating the run right now: wait for its id, bounded by MLflow's timeout."""
    deadline = time.monotonic() + s.mlflow_request_timeout + 1.0
    while time.monotonic() < deadline:
        run_id = r.hget(keys.job(job_id), "mlflow_run_id")
        if run_id is not None:
            return _s(run_id)
        if not r.hexists(keys.job(job_id), "mlflow_run_claim"):
            return None
        time.sleep(0.05)
    return None


ENDED_STATES = frozenset(s.value for s in TERMINAL_STATES)


def run_status(job: dict[str, str]) -> str:
    """FINISHED only when every item succeeded; KILLED when cancelled; FAILED otherwise."""
    status = job.get("status")
    if status == "cancelled":
        return "KILLED"
    if status == "completed" and not _num(job, "failed"):
        return "FINISHED"
    return "FAILED"


def has_buffered(job_id: str) -> bool:
    """Whether this process holds numbers of ``job_id`` not yet added to Redis."""
    with _buffers_lock:
        return job_id in _buffers


def finish_job(job_id: str, redis_client=None, settings: Settings | None = None, kind: str | None = None) -> str | None:
    """After each chunk: its numbers to Redis, progress to the running run (throttled), and once
    the job has ended, the run's final metrics and tags and its end at the job's real end time
    (once, whichever worker gets here first). Returns the ended run's id, or None."""
    s = settings or get_settings()
    r = redis_client or _redis()
    if kind == "predict" and not has_buffered(job_id):
        return None  # a predict job gets no run and its numbers went with its result: skip the read
    job = _job_hash(r, job_id)
    if not job:  # expired or unknown: write nothing that would outlive it
        with _buffers_lock:
            _buffers.pop(job_id, None)
        return None
    flush(job_id, r, ttl_seconds=int(float(job["ttl"])) if job.get("ttl") else None)
    if not _tracked(job, s):
        return None
    _retry_deferred_ends(r, s, but=job_id)
    if job.get("status") not in ENDED_STATES:
        if job.get("mlflow_run_id"):  # off the chunk's thread, like the run's creation
            _tracking_thread().submit(_quietly, log_progress, job_id, job, r, s, time.time())
        return None
    if not r.hsetnx(keys.job(job_id), "mlflow_logged", "1"):
        return None
    return _end_run(r, job_id, job, s)


def _end_run(r, job_id: str, job: dict[str, str], s: Settings) -> str | None:
    """Final metrics, tags and the end of the ended job's run; the caller holds the 'mlflow_logged'
    claim. When MLflow is away the claim is released and the job deferred, so that a later chunk
    (of any job, on any worker) ends the run once MLflow answers: a run is never left RUNNING."""
    run_id = job.get("mlflow_run_id")
    if run_id is None:
        if r.hsetnx(keys.job(job_id), "mlflow_run_claim", "1"):
            run_id = _create_job_run(r, job_id, job, s)
        else:
            run_id = _wait_for_run_id(r, job_id, s)
            if run_id is None:  # its creator died or gave up: whoever retries creates it
                r.hdel(keys.job(job_id), "mlflow_run_claim")
    ended = False
    if run_id is not None:
        agg = {_s(k): _s(v) for k, v in r.hgetall(keys.job_tracking(job_id)).items()}
        run = JobRun(mlflow_client(s), run_id, s)
        top = ", ".join(f"{k}: {v}" for k, v in list(error_types(job).items())[:5])
        run.set_tags({"tidyq.status": job.get("status"), "tidyq.succeeded": job.get("succeeded", "0"),
                      "tidyq.failed": job.get("failed", "0"),
                      **({"tidyq.error_types": top} if top else {}),
                      **({"tidyq.error": job["error"]} if job.get("error") else {})})
        finished = float(job.get("finished_at") or time.time())
        run.log_metrics(job_metrics(agg, job), step=int(_num(job, "succeeded") + _num(job, "failed")))
        ended = run.finish(run_status(job), end_time=finished)
    if ended:
        r.zrem(keys.mlflow_deferred_ends(), job_id)
        return run_id
    r.hdel(keys.job(job_id), "mlflow_logged")
    r.zadd(keys.mlflow_deferred_ends(), {job_id: time.time()}, nx=True)
    return None


def _retry_deferred_ends(r, s: Settings, *, but: str, limit: int = 3) -> None:
    """Up to ``limit`` runs whose job ended while MLflow was away are ended on the tracking thread
    (one Redis read on the chunk's thread when there are none)."""
    waiting = [j for j in (_s(j) for j in r.zrange(keys.mlflow_deferred_ends(), 0, limit - 1)) if j != but]
    if waiting:
        _tracking_thread().submit(_quietly, _end_deferred, r, s, waiting)


def _end_deferred(r, s: Settings, waiting: list[str]) -> None:
    if not gate.available(s):
        return
    for job_id in waiting:
        job = _job_hash(r, job_id)
        if not job or job.get("status") not in ENDED_STATES:
            r.zrem(keys.mlflow_deferred_ends(), job_id)  # expired: nothing left to end
        elif r.hsetnx(keys.job(job_id), "mlflow_logged", "1"):
            _end_run(r, job_id, job, s)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def warm_up(settings: Settings | None = None) -> threading.Thread | None:
    """Import MLflow and open its store on a background thread when a worker process starts: the
    first chunk of a job creates the job's run, and would otherwise wait seconds for that (importing
    mlflow, a sqlite store's schema check) with its items. Never raises; None when tracking is off."""
    s = settings or get_settings()
    if not s.mlflow_tracking_uri:
        return None
    def open_store() -> None:
        try:
            experiment_id(mlflow_client(s), s)
        except Exception:  # e.g. two processes creating a fresh sqlite schema at once: the next call retries
            pass

    thread = threading.Thread(target=open_store, name="tidyq-mlflow-warm-up", daemon=True)
    thread.start()
    return thread


# --- traces -------------------------------------------------------------------------------------

_tracing_started = False


def init_worker_tracing(settings: Settings | None = None) -> bool:
    """Turn on mlflow.dspy.autolog once per worker process, sampled at ``trace_sample_rate``.
    Returns True when tracing is on. Skipped (False) without a tracking URI or at rate 0."""
    global _tracing_started
    s = settings or get_settings()
    if _tracing_started:
        return True
    uri = s.mlflow_tracking_uri
    if not uri or s.trace_sample_rate <= 0:
        return False
    rate = min(1.0, max(0.0, s.trace_sample_rate))

    def start() -> bool:
        import mlflow

        configure_mlflow_client(s)
        os.environ["MLFLOW_TRACE_SAMPLING_RATIO"] = str(rate)
        mlflow.set_tracking_uri(uri)
        client = mlflow_client(s)
        mlflow.set_experiment(experiment_id=experiment_id(client, s))
        mlflow.dspy.autolog(log_traces=True, log_traces_from_compile=False, log_traces_from_eval=False, silent=True)
        return True

    _tracing_started = bool(gate.run(start, s))
    return _tracing_started


@contextmanager
def timed() -> Iterator[dict]:
    out: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - started
