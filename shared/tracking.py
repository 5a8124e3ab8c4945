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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from shared import keys
from shared.config import Settings, get_settings
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
    return MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)


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

    def flush(self) -> None:
        if not self.active or not self._metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
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

    def finish(self, status: str = "FINISHED") -> None:
        if not self.active:
            return
        self.flush()
        gate.run(lambda: self.client.set_terminated(self.run_id, status=status), self.settings)


def start_job_run(job_id: str, kind: str, params: dict[str, Any], *, tags: dict[str, Any] | None = None,
                  settings: Settings | None = None, run_name: str | None = None) -> JobRun:
    """A new run named after the job (no-op JobRun when MLflow is off or down)."""
    s = settings or get_settings()

    def create() -> JobRun:
        from mlflow.entities import Param

        client = mlflow_client(s)
        exp = experiment_id(client, s)
        all_tags = {"tidyq.job_id": job_id, "tidyq.kind": kind, **(tags or {})}
        run = client.create_run(exp, run_name=run_name or f"{kind}-{job_id[:12]}",
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
    r = result.model_dump() if hasattr(result, "model_dump") else dict(result)
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
            vf = (stats.validation_failures if stats is not None else 0) or (1 if error_type == "ValidationFailed" else 0)
            b.add(prefix + "validation_failures", vf)


def flush(job_id: str, redis_client=None, ttl_seconds: int | None = None) -> int:
    """Add this process's buffered numbers of ``job_id`` to Redis (one pipeline) and to the
    per-version serving stats of the models that served them. Returns counters written."""
    with _buffers_lock:
        b = _buffers.pop(job_id, None)
    if b is None or not b.counters:
        return 0
    r = redis_client or _redis()
    key = keys.job_tracking(job_id)
    versions: dict[tuple[str, int], dict[str, float]] = {}
    with r.pipeline(transaction=False) as p:
        for name, value in b.counters.items():
            if name.startswith("v:"):
                _, model, version, counter = name.split(":", 3)
                versions.setdefault((model, int(version)), {})[counter] = value
            if float(value).is_integer():
                p.hincrby(key, name, int(value))
            else:
                p.hincrbyfloat(key, name, value)
        p.expire(key, ttl_seconds or get_settings().result_ttl_seconds)
        p.execute()
    if versions:
        from shared.registry import record_version_stats

        record_version_stats(versions, redis_client=r)
    return len(b.counters)


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
        "cache_hit_rate": _num(agg, "cache_hits") / calls if calls else (_num(agg, "cached_items") / items if items else 0.0),
        "retries": _num(agg, "retries"),
        "validation_failures": _num(agg, "validation_failures"),
        "duration_s": finished - created if finished and created else None,
    }
    for name, value in agg.items():  # per served version
        if name.startswith("v:"):
            _, model, version, counter = name.split(":", 3)
            m[f"version.{model}.{version}.{counter}"] = float(value)
    for name in [k for k in m if k.startswith("version.") and k.endswith(".items")]:
        base = name[: -len("items")]
        n = m[name]
        m[base + "error_rate"] = m.get(base + "failed", 0.0) / n if n else 0.0
        m[base + "latency_mean_ms"] = m.get(base + "latency_ms_sum", 0.0) / n if n else 0.0
    return {k: v for k, v in m.items() if v is not None}


def finish_job(job_id: str, redis_client=None, settings: Settings | None = None) -> str | None:
    """When ``job_id`` has ended, write its one MLflow run (once, whichever worker gets here
    first). Cheap when the job is still running. Returns the run id, or None."""
    s = settings or get_settings()
    r = redis_client or _redis()
    job = {_s(k): _s(v) for k, v in r.hgetall(keys.job(job_id)).items()}
    if not job:  # expired or unknown: write nothing that would outlive it
        with _buffers_lock:
            _buffers.pop(job_id, None)
        return None
    flush(job_id, r, ttl_seconds=int(float(job["ttl"])) if job.get("ttl") else None)
    ended = job.get("status") in ("completed", "failed", "cancelled", "budget_exceeded")
    if not ended or job.get("kind") != "batch":
        return None  # optimize jobs write their own run; a one-item predict job gets none
    if not s.mlflow_tracking_uri or not r.hsetnx(keys.job(job_id), "mlflow_logged", "1"):
        return None
    agg = {_s(k): _s(v) for k, v in r.hgetall(keys.job_tracking(job_id)).items()}
    import json

    spec = json.loads(job.get("spec") or "{}")
    params = {"job_id": job_id, "kind": job.get("kind"), "backend": spec.get("backend"), "model": spec.get("model"),
              "signature": spec.get("signature"), "program": spec.get("program"), "chunk_size": spec.get("chunk_size"),
              "fallback": ",".join(f"{t['backend']}:{t.get('model') or ''}" for t in spec.get("fallback") or []) or None}
    run = start_job_run(job_id, job.get("kind", "batch"), params, tags={"tidyq.status": job.get("status")}, settings=s)
    if not run.active:
        return None
    run.log_metrics(job_metrics(agg, job))
    run.finish("FINISHED" if job.get("status") == "completed" else
               "KILLED" if job.get("status") == "cancelled" else "FAILED")
    r.hset(keys.job(job_id), "mlflow_run_id", run.run_id)
    return run.run_id


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --- traces -------------------------------------------------------------------------------------

_tracing_started = False


def init_worker_tracing(settings: Settings | None = None) -> bool:
    """Turn on mlflow.dspy.autolog once per worker process, sampled at ``trace_sample_rate``.
    Returns True when tracing is on. Skipped (False) without a tracking URI or at rate 0."""
    global _tracing_started
    s = settings or get_settings()
    if _tracing_started:
        return True
    if not s.mlflow_tracking_uri or s.trace_sample_rate <= 0:
        return False
    rate = min(1.0, max(0.0, s.trace_sample_rate))

    def start() -> bool:
        import mlflow

        configure_mlflow_client(s)
        os.environ["MLFLOW_TRACE_SAMPLING_RATIO"] = str(rate)
        mlflow.set_tracking_uri(s.mlflow_tracking_uri)
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
