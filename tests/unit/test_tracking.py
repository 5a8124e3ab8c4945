"""One MLflow run per batch job from aggregates kept in Redis (real redis-server, real sqlite
MLflow store), batched logging, and a tracking server that is down or hangs."""

import socket
import threading
import time

import pytest

from shared import tracking
from shared.jobs import ItemResult, JobKind, JobSpec
from shared.steps.stats import CallStats
from shared.store import JobStore
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)


def test_percentiles_from_the_histogram_are_within_ten_percent():
    values = [float(v) for v in range(1, 1001)]
    hist = {}
    for v in values:
        k = tracking.latency_bucket(v)
        hist[k] = hist.get(k, 0) + 1
    for q, true in ((0.5, 500.0), (0.95, 950.0)):
        got = tracking.percentile_from_histogram(hist, q)
        assert true <= got <= true * 1.1


def _job(redis_url, n=4, kind=JobKind.BATCH):
    store = JobStore.from_url(redis_url)
    spec = JobSpec(id=f"job{time.time_ns()}", kind=kind, signature="question -> answer", backend="mock", total=n,
                   chunk_size=2, ttl_seconds=600, created_at=time.time())
    store.create_job(spec)
    return store, spec


def _results(n):
    out = []
    for i in range(n):
        ok = i != 0
        r = ItemResult(custom_id=str(i), status="succeeded" if ok else "failed",
                       outputs={"answer": "x"} if ok else None,
                       latency_ms=10.0 * (i + 1), cached=i == 3, attempts=1 if i != 3 else 0)
        out.append((r, CallStats(calls=1, attempts=r.attempts, cache_hits=int(r.cached), retries=1 if i == 2 else 0,
                                 input_tokens=100, output_tokens=20, cost_usd=0.001, latency_ms=r.latency_ms)))
    return out


def test_one_run_per_batch_job_with_aggregated_metrics(redis_url, mlflow_uri):
    from mlflow import MlflowClient

    store, spec = _job(redis_url)
    results = _results(4)
    # two "chunks" in two flushes (what two workers would do), results recorded in the store
    for chunk in (results[:2], results[2:]):
        for r, stats in chunk:
            tracking.record_item(spec.id, r, stats)
        assert tracking.finish_job(spec.id) is None  # not finished yet: no run
        store.record_results(spec.id, [(r, {"question": "q"}) for r, _ in chunk])
    run_id = tracking.finish_job(spec.id)
    assert run_id and tracking.finish_job(spec.id) is None  # exactly one run, however often it is asked
    run = MlflowClient(mlflow_uri).get_run(run_id)
    m = run.data.metrics
    assert (m["items"], m["succeeded"], m["failed"]) == (4, 3, 1)
    assert (m["input_tokens"], m["output_tokens"], m["retries"], m["lm_calls"]) == (400, 80, 1, 4)
    assert m["cache_hit_rate"] == 0.25 and m["cost_usd"] == pytest.approx(0.004)
    assert 20 <= m["latency_p50_ms"] <= 22 and 40 <= m["latency_p95_ms"] <= 44
    assert run.data.params["backend"] == "mock" and run.data.params["signature"] == "question -> answer"
    # one of the four items failed: the run says so (FINISHED is only for jobs where every item succeeded)
    assert run.data.tags["tidyq.job_id"] == spec.id and run.info.status == "FAILED"
    assert run.data.tags["tidyq.status"] == "completed" and run.data.tags["tidyq.failed"] == "1"
    assert m["attempts"] == 3  # the results' attempts, summed
    history = MlflowClient(mlflow_uri).get_metric_history(run_id, "items")
    assert len(history) == 1  # logged once at the end, never per item


def test_predict_jobs_get_no_run(redis_url, mlflow_uri):
    store, spec = _job(redis_url, n=1, kind=JobKind.PREDICT)
    r, stats = _results(2)[1]
    tracking.record_item(spec.id, r, stats)
    store.record_results(spec.id, [(r, None)])
    assert tracking.finish_job(spec.id) is None


class _BlackHole:
    """A TCP server that accepts connections and never answers: a hung tracking server."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted = 0
        self.conns = []
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                self.conns.append(conn)
            except OSError:
                continue

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def close(self):
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tracking_server_down_drops_metrics_with_one_warning(redis_url, monkeypatch):
    from structlog.testing import capture_logs

    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    tracking.gate.reset()
    with capture_logs() as logs:
        _three_jobs_while_down(redis_url)
    assert [e["event"] for e in logs].count("mlflow_unavailable") == 1
    tracking.gate.reset()


def _three_jobs_while_down(redis_url):
    for _ in range(3):
        store, spec = _job(redis_url, n=2)
        for r, stats in _results(2):
            tracking.record_item(spec.id, r, stats)
        store.record_results(spec.id, [(r, None) for r, _ in _results(2)])
        assert tracking.finish_job(spec.id) is None  # the job is unaffected; its metrics are dropped
        assert store.status(spec.id).status.value == "completed"
    assert tracking.start_job_run("x", "batch", {}).active is False


def test_hung_tracking_server_is_asked_once_per_backoff_window(redis_url, monkeypatch):
    hole = _BlackHole()
    try:
        monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{hole.port}")
        monkeypatch.setenv("TIDYQ_MLFLOW_REQUEST_TIMEOUT", "1")
        tracking.gate.reset()
        tracking._experiments.clear()
        assert tracking.start_job_run("a", "batch", {}).active is False  # times out once
        first = hole.accepted
        assert first >= 1
        for i in range(5):
            assert tracking.start_job_run(f"b{i}", "batch", {}).active is False
        assert hole.accepted == first  # within the backoff window MLflow is not contacted at all
        assert tracking.gate.dropped == 1
    finally:
        hole.close()
        tracking.gate.reset()


def test_tracing_is_off_without_a_rate_or_uri(monkeypatch):
    monkeypatch.delenv("TIDYQ_MLFLOW_TRACKING_URI", raising=False)
    assert tracking.init_worker_tracing() is False
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", "sqlite:////tmp/unused.db")
    monkeypatch.setenv("TIDYQ_TRACE_SAMPLE_RATE", "0")
    assert tracking.init_worker_tracing() is False
