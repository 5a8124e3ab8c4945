"""`tidyq queues`: depth and oldest-item age from the broker's lists, workers from heartbeats,
items/s and error rate from the workers' buckets, running jobs with progress. Real redis-server,
real Celery worker processes, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import redis

from producers.client import Client
from producers.ops_state import OpsReader

TIDYQ = os.path.join(os.path.dirname(sys.executable), "tidyq")
FAST = {"TIDYQ_METRICS_INTERVAL": "0.3", "TIDYQ_HEARTBEAT_INTERVAL": "1"}


def cli(redis_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    out = subprocess.run([TIDYQ, "queues", *args], env=dict(os.environ, TIDYQ_REDIS_URL=redis_url),
                         capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def by_queue(snapshot: dict) -> dict[str, dict]:
    return {q["name"]: q for q in snapshot["queues"]}


def rows(n: int, prefix: str = "r") -> list[dict]:
    return [{"custom_id": f"{prefix}{i}", "inputs": {"question": f"{prefix} question {i}?"}} for i in range(n)]


def test_waiting_items_show_depth_age_and_no_worker(redis_url):
    submitted = time.time()
    Client(redis_url).submit_batch(rows(30), "question -> answer", backend="mock", chunk_size=10)
    time.sleep(1.1)
    out = cli(redis_url, "--json")
    assert out.returncode == 0
    q = by_queue(json.loads(out.stdout))
    assert q["predict.mock"]["depth"] == 3
    assert 1.0 <= q["predict.mock"]["oldest_age_seconds"] <= time.time() - submitted + 0.5
    assert q["predict.mock"]["workers"] == 0
    assert q["predict.direct"]["depth"] == 0 and q["predict.direct"]["oldest_age_seconds"] is None
    assert set(q) == {"predict.mock", "predict.direct", "predict.bedrock", "predict.gateway", "optimize"}
    text = cli(redis_url, "--once").stdout
    assert "predict.mock" in text and "running jobs" in text


def test_running_job_progress_rates_and_error_rate(redis_url, start_worker):
    start_worker(queues=["predict.mock"], concurrency=1, env={**FAST, "TIDYQ_MAX_ITEM_BYTES": "200"})
    reader = OpsReader(redis.Redis.from_url(redis_url))
    client = Client(redis_url)
    job = client.submit_batch(rows(1200, "big-job-"), "question -> answer", backend="mock", chunk_size=10)
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snap = reader.snapshot()
        running = [j for j in snap.jobs if j.id == job.id]
        if running and 0 < running[0].done < running[0].total:
            seen = running[0]
            break
        if job.status()["status"] == "completed":
            break
        time.sleep(0.05)
    assert seen is not None, "never saw the job running with partial progress"
    assert seen.kind == "batch" and seen.backend == "mock" and seen.status == "running" and seen.total == 1200
    assert 0 < seen.fraction < 1
    assert job.wait(timeout=120)["status"] == "completed"

    bad = rows(20, "ok-") + [{"custom_id": f"bad{i}", "inputs": {"question": "x" * 300}} for i in range(5)]
    assert client.submit_batch(bad, "question -> answer", backend="mock").wait(timeout=60)["counts"]["failed"] == 5

    def settled():
        s = json.loads(cli(redis_url, "--json").stdout)
        return s if s["jobs"] == [] and _window_total(redis_url) == 1225 else None

    deadline = time.monotonic() + 20
    while (snap := settled()) is None:
        assert time.monotonic() < deadline, "the workers' buckets never reached 1225 items"
        time.sleep(0.3)
    mock = by_queue(snap)["predict.mock"]
    assert mock["workers"] == 1 and mock["processes"] == 1 and mock["depth"] == 0
    assert mock["items_per_second"] > 0
    assert mock["error_rate"] == round(5 / 1225, 6)
    assert by_queue(snap)["predict.direct"]["error_rate"] is None


def _window_total(redis_url: str) -> int:
    counts, _ = OpsReader(redis.Redis.from_url(redis_url)).window_counts(600)
    return sum(n for (q, _), n in counts.items() if q == "predict.mock")


def redis_commands(r: redis.Redis) -> int:
    """Commands the server ran, but this test's own INFO calls."""
    return sum(v["calls"] for k, v in r.info("commandstats").items() if k != "cmdstat_info")


def wait_for_refreshes(r: redis.Redis, proc: subprocess.Popen, count: int, timeout: float = 60) -> None:
    """Until Redis saw ``count`` bursts of commands (a snapshot each) with quiet between them: the
    first snapshot is taken before the live view starts, the next ones by its refresh loop."""
    deadline = time.monotonic() + timeout
    bursts, last, quiet, changed_at = 0, redis_commands(r), True, time.monotonic()
    while bursts < count:
        assert time.monotonic() < deadline, f"saw {bursts} of {count} refreshes"
        assert proc.poll() is None, proc.communicate()[1]
        now = redis_commands(r)
        if now != last:
            bursts += quiet
            last, quiet, changed_at = now, False, time.monotonic()
        elif time.monotonic() - changed_at >= 0.15:  # the refresh interval is 0.3 s
            quiet = True
        time.sleep(0.02)


def test_live_view_refreshes_until_interrupted(redis_url):
    r = redis.Redis.from_url(redis_url)
    proc = subprocess.Popen([TIDYQ, "queues", "--interval", "0.3"], env=dict(os.environ, TIDYQ_REDIS_URL=redis_url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_refreshes(r, proc, count=4)  # the CLI's imports take a few seconds, then a few refreshes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    assert "predict.mock" in out and "Traceback" not in err


def test_unreachable_redis_is_a_clear_error():
    from shared.redis_server import free_port

    out = cli(f"redis://127.0.0.1:{free_port()}/0", "--once")
    assert out.returncode == 1 and "cannot reach Redis" in out.stderr
