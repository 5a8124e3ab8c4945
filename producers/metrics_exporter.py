"""`tidyq metrics`: ONE Prometheus endpoint for the whole deployment.

Every worker process on every machine adds its counter deltas to Redis
(workers/metrics_publisher.py); this exporter turns that hash, the broker's queue lists and the
worker heartbeats into Prometheus metrics at scrape time (a custom collector: nothing is cached
here, so any number of exporter replicas agree). Run one per deployment, bind it to a private
interface (default 127.0.0.1) and scrape it; see deploy/prometheus/.

Metric names (the alert rules and the Grafana dashboard use exactly these):
  tidyq_up                                          1 when Redis answered this scrape
  tidyq_queue_depth{queue}                          messages waiting
  tidyq_queue_oldest_item_age_seconds{queue}        0 when the queue is empty
  tidyq_queue_workers{queue} / tidyq_queue_worker_processes{queue}
  tidyq_jobs_running
  tidyq_items_total{queue,backend,status}           status = succeeded | failed
  tidyq_item_errors_total{queue,backend,error}      failed items by their result's error type
  tidyq_lm_calls_total{backend,model} / tidyq_lm_errors_total{backend,model,error}
  tidyq_lm_attempts_total / tidyq_lm_retries_total {backend,model}
  tidyq_lm_latency_seconds_bucket/_sum/_count{backend,model}
  tidyq_cache_hits_total / tidyq_cache_misses_total {backend,model}
  tidyq_rate_limit_wait_seconds_total{backend,model}
  tidyq_tokens_total{backend,model,kind}            kind = input | output
  tidyq_cost_usd_total{backend,model}
  tidyq_validation_failures_total{backend,model}
  tidyq_breaker_state{target} / tidyq_breaker_open{target} / tidyq_breaker_transitions_total{target,transition}
  tidyq_concurrency_limit{target,mode} / tidyq_concurrency_in_flight{target} / tidyq_concurrency_throttles{target}
  tidyq_fallbacks_total{target,reason} / tidyq_fallback_served_total{target}
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from producers.ops_state import OpsReader
from shared.metrics import LATENCY_BUCKETS_MS
from shared.queues import ALL_QUEUES

# counter metric in the Redis hash -> (Prometheus name without _total, help, label names)
COUNTERS = {
    "items": ("tidyq_items", "Job items finished, by queue, backend and outcome.", ("queue", "backend", "status")),
    "item_errors": ("tidyq_item_errors", "Failed job items by the error type their result carries.",
                    ("queue", "backend", "error")),
    "lm_calls": ("tidyq_lm_calls", "LM calls through the unified wrapper.", ("backend", "model")),
    "lm_errors": ("tidyq_lm_errors", "LM calls that raised, by error type.", ("backend", "model", "error")),
    "lm_attempts": ("tidyq_lm_attempts", "Provider attempts (a retried call counts each).", ("backend", "model")),
    "lm_retries": ("tidyq_lm_retries", "Retries made by the retry step.", ("backend", "model")),
    "cache_hits": ("tidyq_cache_hits", "LM calls answered by the cache.", ("backend", "model")),
    "cache_misses": ("tidyq_cache_misses", "LM calls the cache could not answer.", ("backend", "model")),
    "rate_limit_wait_seconds": ("tidyq_rate_limit_wait_seconds", "Seconds spent waiting on the global rate limits.",
                                ("backend", "model")),
    "tokens": ("tidyq_tokens", "Tokens used (cache hits excluded).", ("backend", "model", "kind")),
    "cost_usd": ("tidyq_cost_usd", "Estimated provider cost in USD (models with known prices).", ("backend", "model")),
    "validation_failures": ("tidyq_validation_failures", "Outputs that failed validation after every attempt.",
                            ("backend", "model")),
}
LATENCY_BOUNDS_S = [b / 1000 for b in LATENCY_BUCKETS_MS]


def _bound_key(bound_ms: str) -> str:
    return "+Inf" if bound_ms == "+Inf" else repr(float(bound_ms) / 1000)


class TidyqCollector:
    """Collects at scrape time from Redis. A Redis outage yields ``tidyq_up 0`` (not an error
    page), so the alert on it can fire."""

    def __init__(self, reader: OpsReader, queues: Iterable[str] = ALL_QUEUES):
        self.reader = reader
        self.queues = tuple(queues)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("tidyq_up", "1 when the exporter could read Redis during this scrape.")
        try:
            families = list(self._families())
        except Exception:  # noqa: BLE001 - any Redis failure means "down" for this scrape
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterable[Metric]:
        snap = self.reader.snapshot(self.queues, jobs=True)
        depth = GaugeMetricFamily("tidyq_queue_depth", "Messages waiting in the queue.", labels=["queue"])
        age = GaugeMetricFamily("tidyq_queue_oldest_item_age_seconds",
                                "Age of the oldest waiting item since its job was submitted (0 when empty).",
                                labels=["queue"])
        workers = GaugeMetricFamily("tidyq_queue_workers", "Live worker nodes consuming the queue.", labels=["queue"])
        procs = GaugeMetricFamily("tidyq_queue_worker_processes", "Pool processes of the live worker nodes "
                                  "consuming the queue.", labels=["queue"])
        for q in snap.queues:
            depth.add_metric([q.name], q.depth)
            age.add_metric([q.name], q.oldest_age_seconds or 0.0)
            workers.add_metric([q.name], q.workers)
            procs.add_metric([q.name], q.processes)
        running = GaugeMetricFamily("tidyq_jobs_running", "Jobs with chunks run recently and not finished.")
        running.add_metric([], len(snap.jobs))
        yield from (depth, age, workers, procs, running)

        counters = self.reader.counters()
        families = {m: CounterMetricFamily(name, help_, labels=list(labels)) for m, (name, help_, labels)
                    in COUNTERS.items()}
        latency: dict[tuple[str, str], dict] = {}
        for c in counters:
            if c.metric in families:
                labels = COUNTERS[c.metric][2]
                if len(c.labels) == len(labels):
                    families[c.metric].add_metric(list(c.labels), c.value)
            elif c.metric == "latency_bucket" and len(c.labels) == 3:
                entry = latency.setdefault(c.labels[:2], {"buckets": {}, "sum": 0.0})
                entry["buckets"][_bound_key(c.labels[2])] = c.value
            elif c.metric == "latency_ms_sum" and len(c.labels) == 2:
                latency.setdefault(c.labels, {"buckets": {}, "sum": 0.0})["sum"] = c.value / 1000
        yield from families.values()
        hist = HistogramMetricFamily("tidyq_lm_latency_seconds", "LM call latency through the wrapper "
                                     "(cache hits included).", labels=["backend", "model"])
        for (backend, model), data in sorted(latency.items()):
            cumulative, buckets = 0.0, []
            for bound in [repr(b) for b in LATENCY_BOUNDS_S] + ["+Inf"]:
                cumulative += data["buckets"].get(bound, 0.0)
                buckets.append((bound, cumulative))
            hist.add_metric([backend, model], buckets, data["sum"])
        yield hist
        yield from breaker_families(self.reader.r)
        yield from concurrency_families(self.reader.concurrency())


def breaker_families(client) -> list[Metric]:
    """Circuit-breaker states (shared.breaker keeps them in Redis) as gauges and counters; none
    when the breaker module or its data is not there."""
    try:
        from shared.breaker import breaker_states
    except ImportError:
        return []
    states = breaker_states(client)
    state = GaugeMetricFamily("tidyq_breaker_state", "Circuit breaker per target: 0 closed, 1 half-open, 2 open.",
                              labels=["target"])
    is_open = GaugeMetricFamily("tidyq_breaker_open", "1 when the target's circuit breaker is open.", labels=["target"])
    transitions = CounterMetricFamily("tidyq_breaker_transitions", "Breaker state changes per target.",
                                      labels=["target", "transition"])
    fallbacks = CounterMetricFamily("tidyq_fallbacks", "Calls that moved off a target to the next one, by reason "
                                    "(breaker_open, failed:<error>, retry_later, context_length, ...).",
                                    labels=["target", "reason"])
    served = CounterMetricFamily("tidyq_fallback_served", "Calls a target served as a fallback.", labels=["target"])
    for st in states:
        state.add_metric([st["target"]], st["state_value"])
        is_open.add_metric([st["target"]], 1 if st["state"] == "open" else 0)
        for change, n in st.get("transitions", {}).items():
            transitions.add_metric([st["target"], change], n)
        for reason, n in st.get("skipped", {}).items():
            fallbacks.add_metric([st["target"], reason], n)
        served.add_metric([st["target"]], st.get("served_as_fallback", 0))
    return [state, is_open, transitions, fallbacks, served]


def concurrency_families(targets: list[dict]) -> list[Metric]:
    """The adaptive in-flight cap per target (shared/concurrency.py), summed over live workers."""
    limit = GaugeMetricFamily("tidyq_concurrency_limit", "Provider calls allowed in flight per target, summed over "
                              "live workers (mode: learned, configured or pinned).", labels=["target", "mode"])
    inflight = GaugeMetricFamily("tidyq_concurrency_in_flight", "Provider calls in flight per target.",
                                 labels=["target"])
    throttles = GaugeMetricFamily("tidyq_concurrency_throttles", "429s seen per target by the live workers' limiters.",
                                  labels=["target"])
    for t in targets:
        limit.add_metric([t["target"], str(t["mode"])], t["limit"])
        inflight.add_metric([t["target"]], t["inflight"])
        throttles.add_metric([t["target"]], t["throttles"])
    return [limit, inflight, throttles]


def build_registry(reader: OpsReader, queues: Iterable[str] = ALL_QUEUES) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TidyqCollector(reader, queues))
    return reg


def exposition(reader: OpsReader) -> str:
    return generate_latest(build_registry(reader)).decode()


def serve(reader: OpsReader, host: str, port: int, stop: threading.Event | None = None) -> None:
    """Serve /metrics until SIGINT/SIGTERM (or ``stop`` is set)."""
    from prometheus_client import start_http_server

    stop = stop or threading.Event()
    server, thread = start_http_server(port, addr=host, registry=build_registry(reader))
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
