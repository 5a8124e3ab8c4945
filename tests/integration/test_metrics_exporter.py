"""Metrics across processes: worker processes publish deltas to Redis, one exporter serves them.

Real redis-server, real `celery -A workers worker` prefork processes (two nodes x two processes),
a real `tidyq metrics` HTTP server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from urllib.request import urlopen

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from producers.metrics_exporter import exposition
from producers.ops_state import OpsReader
from shared.metrics import MetricsRegistry
from shared.redis_server import free_port
from tests.waiting import wait_for
from workers.metrics_publisher import Publisher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIDYQ = os.path.join(os.path.dirname(sys.executable), "tidyq")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(text: str, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= set(ls))


def _call(reg: MetricsRegistry, latency_ms: float, *, cached=False, error=None, cost=0.001):
    reg.record_call("direct", "openai/gpt-4o-mini", latency_ms=latency_ms, cached=cached, attempts=2, retries=1,
                    input_tokens=10, output_tokens=5, cost_usd=cost, error=error, rate_limit_wait_s=0.25)


def test_publishers_of_several_processes_sum_and_a_failed_flush_is_not_lost(redis_url):
    client = redis.Redis.from_url(redis_url)
    reg_a, reg_b = MetricsRegistry(), MetricsRegistry()
    a, b = Publisher(client, reg_a), Publisher(client, reg_b)
    for ms in (3, 40, 700):
        _call(reg_a, ms)
    _call(reg_b, 20000, error="LMRateLimitError")
    a.record_item("predict.direct", "direct", "succeeded")
    b.record_item("predict.direct", "direct", "failed")
    assert a.flush() and b.flush()
    assert a.flush() and b.flush()  # nothing new: no double counting

    # a process whose Redis is away keeps its deltas and publishes them later, once
    _call(reg_a, 5, cached=True)
    a.r = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    assert a.flush() is False
    a.r = client
    assert a.flush()
    assert a.flush()

    text = exposition(OpsReader(client))
    assert total(text, "tidyq_lm_calls_total", backend="direct") == 5
    assert total(text, "tidyq_lm_errors_total", error="LMRateLimitError") == 1
    assert total(text, "tidyq_cache_hits_total") == 1 and total(text, "tidyq_cache_misses_total") == 4
    assert total(text, "tidyq_lm_retries_total") == 5 and total(text, "tidyq_lm_attempts_total") == 10
    assert total(text, "tidyq_tokens_total", kind="input") == 50
    assert total(text, "tidyq_cost_usd_total") == pytest.approx(0.005)
    assert total(text, "tidyq_rate_limit_wait_seconds_total") == pytest.approx(1.25)
    assert total(text, "tidyq_items_total", status="succeeded") == 1
    assert total(text, "tidyq_items_total", status="failed") == 1
    # histogram: cumulative buckets in seconds
    assert total(text, "tidyq_lm_latency_seconds_count") == 5
    assert total(text, "tidyq_lm_latency_seconds_bucket", le="0.005") == 2
    assert total(text, "tidyq_lm_latency_seconds_bucket", le="0.05") == 3
    assert total(text, "tidyq_lm_latency_seconds_bucket", le="1.0") == 4
    assert total(text, "tidyq_lm_latency_seconds_bucket", le="30.0") == 5
    assert total(text, "tidyq_lm_latency_seconds_sum") == pytest.approx((3 + 40 + 700 + 20000 + 5) / 1000)

    # a recycled pool process (fresh registry, fresh publisher) adds on top: totals never go back
    reg_c = MetricsRegistry()
    _call(reg_c, 1)
    assert Publisher(client, reg_c).flush()
    assert total(exposition(OpsReader(client)), "tidyq_lm_calls_total") == 6


def test_exporter_says_down_when_redis_is_unreachable():
    text = exposition(OpsReader(redis.Redis(port=free_port(), socket_connect_timeout=0.5)))
    assert total(text, "tidyq_up") == 0


def test_one_endpoint_reports_a_batch_served_by_two_prefork_workers(redis_url, start_worker):
    env = {"TIDYQ_METRICS_INTERVAL": "0.3", "TIDYQ_HEARTBEAT_INTERVAL": "1", "TIDYQ_MAX_ITEM_BYTES": "200"}
    start_worker(queues=["predict.mock"], concurrency=2, env=env)
    start_worker(queues=["predict.mock"], concurrency=2, env=env)
    from producers.client import Client

    rows = [{"custom_id": f"r{i}", "inputs": {"question": f"what is {i} + {i}?"}} for i in range(115)]
    rows += [{"custom_id": f"big{i}", "inputs": {"question": "x" * 300}} for i in range(5)]  # fail in the worker
    job = Client(redis_url).submit_batch(rows, "question -> answer", backend="mock", chunk_size=6)
    status = job.wait(timeout=120)
    assert status["counts"] == {"total": 120, "succeeded": 115, "failed": 5}

    port = free_port()
    proc = subprocess.Popen([TIDYQ, "metrics", "--port", str(port)], cwd=ROOT,
                            env=dict(os.environ, TIDYQ_REDIS_URL=redis_url, LITELLM_LOCAL_MODEL_COST_MAP="True"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        def scrape():
            try:
                with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except OSError:
                return None
            done = total(text, "tidyq_items_total", queue="predict.mock")
            return text if done == 120 else None

        text = wait_for(scrape, 30, "the exporter to report all 120 items")
        assert total(text, "tidyq_up") == 1
        assert total(text, "tidyq_items_total", backend="mock", status="succeeded") == 115
        assert total(text, "tidyq_items_total", backend="mock", status="failed") == 5
        assert total(text, "tidyq_lm_calls_total", backend="mock") == 115
        assert total(text, "tidyq_lm_latency_seconds_count", backend="mock") == 115
        assert total(text, "tidyq_cache_hits_total") + total(text, "tidyq_cache_misses_total") == 115
        assert total(text, "tidyq_tokens_total", kind="input") > 0
        assert total(text, "tidyq_queue_workers", queue="predict.mock") == 2
        assert total(text, "tidyq_queue_worker_processes", queue="predict.mock") == 4
        assert total(text, "tidyq_queue_workers", queue="predict.direct") == 0
        assert total(text, "tidyq_queue_depth", queue="predict.mock") == 0
        # the counters come from several processes: each process flushes its own deltas, and the
        # sums stored in Redis are exact
        client = redis.Redis.from_url(redis_url)
        stored = {tuple(json.loads(k)): float(v) for k, v in client.hgetall("tidyq:ops:counters").items()}
        assert stored[("items", "predict.mock", "mock", "succeeded")] == 115
        assert stored[("items", "predict.mock", "mock", "failed")] == 5
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def test_metrics_port_in_use_is_a_clear_error(redis_url):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([TIDYQ, "metrics", "--port", str(port)], cwd=ROOT,
                             env=dict(os.environ, TIDYQ_REDIS_URL=redis_url), capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 2 and "--port" in out.stderr and "Traceback" not in out.stderr


def test_circuit_breaker_states_are_exported(redis_url):
    from shared.breaker import BreakerSettings, CircuitBreaker

    client = redis.Redis.from_url(redis_url)
    settings = BreakerSettings(consecutive_failures=3, closed_memo_seconds=0.0)
    broken = CircuitBreaker(client, "direct:openai/gpt-4o-mini", settings)
    for _ in range(3):
        broken.record(broken.acquire(), "fail")
    healthy = CircuitBreaker(client, "mock:mock", settings)
    healthy.record(healthy.acquire(), "ok")
    text = exposition(OpsReader(client))
    assert total(text, "tidyq_breaker_state", target="direct:openai/gpt-4o-mini") == 2
    assert total(text, "tidyq_breaker_open", target="direct:openai/gpt-4o-mini") == 1
    assert total(text, "tidyq_breaker_state", target="mock:mock") == 0
    assert total(text, "tidyq_breaker_transitions_total", target="direct:openai/gpt-4o-mini") >= 1
