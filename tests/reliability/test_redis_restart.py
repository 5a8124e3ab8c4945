"""Redis restarted in the middle of a job, with the shipped config (AOF on, a password).

Workers (Celery consumers, chunk tasks writing results) and the producer (status, results,
new submissions) must ride the outage out: no item lost, every result right, the job completes.
"""

import time

import pytest
import redis

from producers import Client
from tests.fakes.answers import expected_outputs
from tests.reliability.conftest import SIG, direct_env, rows, wait_for

N = 1000


def wait_through_outage(job, timeout):
    """Job.wait, tolerating connection errors while Redis is still loading: a producer sees the
    outage as errors (it fails fast by design) and works again, unchanged, once Redis is back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return job.wait(timeout=max(0.1, deadline - time.monotonic()), poll=0.1)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            time.sleep(0.2)
    raise AssertionError(f"job {job.id} did not finish within {timeout}s")


@pytest.mark.slow
def test_redis_restart_mid_job_loses_nothing(shipped_redis, worker_on, openai_fake, figures):
    openai_fake.set_latency(0.05)
    env = direct_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=4)
    workers = [worker_on(shipped_redis.url, ["predict.direct"], 2, env) for _ in range(2)]
    client = Client(shipped_redis.url)
    inputs = rows(N, "rr")
    started = time.monotonic()
    job = client.submit_batch(inputs, SIG, backend="direct", chunk_size=25)
    wait_for(lambda: job.status()["counts"]["succeeded"] >= N // 4, 60, "a quarter of the items")
    done_before = job.status()["counts"]["succeeded"]
    restart_at = time.monotonic()
    shipped_redis.restart(down_seconds=2.0)
    back_at = time.monotonic()

    st = wait_through_outage(job, timeout=120)  # the same producer client reconnects on its own
    finished = time.monotonic()
    assert st["status"] == "completed", st
    assert st["counts"] == {"total": N, "succeeded": N, "failed": 0}
    results = list(job.results(timeout=10))
    assert len(results) == N and {r["custom_id"] for r in results} == {r["custom_id"] for r in inputs}
    by_id = {r["custom_id"]: r for r in results}
    for row in inputs:
        assert by_id[row["custom_id"]]["outputs"] == expected_outputs(row["inputs"], ["answer"])
    dead = [f"worker {i} (exit {w.process.poll() if w.process else None}):\n{w.log_tail(60)}"
            for i, w in enumerate(workers) if not w.alive()]
    assert not dead, "\n\n".join(dead)  # the log, since pytest prunes old tmp dirs

    # new work after the restart: the same producer and the same workers still serve it
    again = client.submit_batch(rows(50, "after"), SIG, backend="direct", chunk_size=10)
    assert again.wait(timeout=60)["counts"] == {"total": 50, "succeeded": 50, "failed": 0}
    figures("redis_restart", {"items": N, "done_at_restart": done_before,
                              "down_s": round(back_at - restart_at, 1),
                              "restart_to_completion_s": round(finished - back_at, 1),
                              "total_s": round(finished - started, 1),
                              "provider_calls": openai_fake.request_count - 50})
