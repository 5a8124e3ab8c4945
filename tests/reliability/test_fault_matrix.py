"""The fault matrix: one job per scenario, exact per item (every item one correct result, none twice).

- SIGKILL of a worker at 10 random moments of a three-worker job, a replacement started after
  each; among the moments two during a result write (Redis holds every write with CLIENT PAUSE
  WRITE while the victim dies) and one while the victim holds a countdown (a chunk waiting out a
  provider's Retry-After);
- Redis SIGKILLed (no clean shutdown) with AOF everysec, then restarted on its files: up to a
  second of writes is lost (results, acks, ledger entries, queue pops); the job still completes.
Short leases via settings keep it quick: visibility 3 s, ledger lease 3 s, sweep every 1 s.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from producers import Client
from shared import keys
from tests.fakes.answers import expected_outputs
from tests.reliability.conftest import SIG, direct_env, rows, wait_for
from tests.reliability.test_redis_restart import wait_through_outage

QUEUE = "predict.direct"
FAST_LEASES = {"TIDYQ_VISIBILITY_TIMEOUT": 3, "TIDYQ_LEDGER_LEASE_SECONDS": 3, "TIDYQ_SWEEP_INTERVAL": 1}


def assert_exact(redis_url: str, job, inputs: list[dict], st: dict) -> None:
    n = len(inputs)
    assert st["status"] == "completed" and st["counts"] == {"total": n, "succeeded": n, "failed": 0}, st
    results = list(job.results(timeout=30))
    assert len(results) == n == redis.Redis.from_url(redis_url).llen(keys.job_order(job.id))  # none twice
    by_id = {r["custom_id"]: r for r in results}
    assert set(by_id) == {row["custom_id"] for row in inputs}
    for row in inputs:  # each item's own answer
        assert by_id[row["custom_id"]]["outputs"] == expected_outputs(row["inputs"], ["answer"])


def holder_of_a_countdown(client: Client, workers: list) -> object | None:
    """The live worker holding a chunk with an ETA (Celery's own `inspect scheduled`)."""
    scheduled = client.app.control.inspect(timeout=1.0).scheduled() or {}
    for w in workers:
        if w.alive() and scheduled.get(w.hostname):
            return w
    return None


@pytest.mark.slow
def test_ten_worker_kills_during_a_three_worker_job_lose_and_duplicate_nothing(redis_url, start_worker, openai_fake,
                                                                           figures):
    openai_fake.set_latency(0.2)  # 60 items/s on three workers: the job outlasts ten kills and restarts
    env = direct_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=4, **FAST_LEASES)
    workers = [start_worker(queues=[QUEUE], concurrency=1, env=env) for _ in range(3)]
    client = Client()
    r = redis.Redis.from_url(redis_url)
    n = 3000
    inputs = rows(n, "km")
    rng = random.Random(18)
    moments = sorted(rng.uniform(0.04, 0.8) for _ in range(9)) + [0.9]  # fractions of the items done
    kinds = ["random"] * 10
    kinds[2] = kinds[6] = "result_write"
    kinds[9] = "countdown"  # the last, at 90%: a requeued chunk joins the back of the queue, so with a
    # short backlog left a worker receives it before its ETA and holds it (workers/leases.py renews it)
    started = time.monotonic()
    job = client.submit_batch(inputs, SIG, backend="direct", chunk_size=40)
    done = lambda: job.status()["counts"]["succeeded"]  # noqa: E731
    log = []
    replacing: list[threading.Thread] = []
    for frac, kind in zip(moments, kinds, strict=True):
        wait_for(lambda frac=frac: done() >= frac * n, 120, f"{frac:.0%} of the items")
        if sum(w.alive() for w in workers) < 2:  # one must survive every kill: wait for a replacement
            for t in replacing:
                t.join(timeout=90)
        live = [w for w in workers if w.alive()]
        victim = rng.choice(live)
        if kind == "countdown":
            openai_fake.fail_next(4, 429, retry_after=16)  # above max_inline_wait: back to the queue, 16 s ETA
            deadline = time.monotonic() + 30
            holder = None
            while holder is None and time.monotonic() < deadline:
                holder = holder_of_a_countdown(client, live)
            victim = holder or victim
            kind = "countdown" if holder else "countdown_not_seen"
        if kind == "result_write":
            r.execute_command("CLIENT", "PAUSE", 5000, "WRITE")  # every worker now blocks in its next write
            time.sleep(0.4)
            victim.kill()
            r.execute_command("CLIENT", "UNPAUSE")
        else:
            victim.kill()
        log.append({"at_items": done(), "kind": kind})
        t = threading.Thread(target=lambda: workers.append(start_worker(queues=[QUEUE], concurrency=1, env=env)))
        t.start()
        replacing.append(t)
    for t in replacing:
        t.join(timeout=90)
    st = job.wait(timeout=180, poll=0.1)
    took = time.monotonic() - started
    assert_exact(redis_url, job, inputs, st)
    assert sum(1 for e in log if e["kind"] == "countdown") == 1, log
    assert len(log) == 10 and log[-2]["at_items"] < n, log  # every kill happened while the job ran
    figures("kill_matrix", {"items": n, "kills": log, "seconds": round(took, 1),
                            "provider_calls": openai_fake.request_count,
                            "provider_calls_redone": openai_fake.request_count - n - 4,
                            "chunk_resends": st["chunk_resends"]})


def run_through_redis_outage(shipped_redis, worker_on, openai_fake, n: int, prefix: str, outage) -> dict:
    """Two workers, an n-item job; ``outage()`` at a third of it; the job must end exact."""
    openai_fake.set_latency(0.05)
    env = direct_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=4, **FAST_LEASES)
    workers = [worker_on(shipped_redis.url, [QUEUE], 2, env) for _ in range(2)]
    client = Client(shipped_redis.url)
    inputs = rows(n, prefix)
    job = client.submit_batch(inputs, SIG, backend="direct", chunk_size=25)
    wait_for(lambda: job.status()["counts"]["succeeded"] >= n // 3, 60, "a third of the items")
    done_before = job.status()["counts"]["succeeded"]
    outage()
    back_at = time.monotonic()
    st = wait_through_outage(job, timeout=150)
    assert_exact(shipped_redis.url, job, inputs, st)
    assert all(w.alive() for w in workers)
    return {"items": n, "done_at_outage": done_before, "back_to_completion_s": round(time.monotonic() - back_at, 1),
            "provider_calls": openai_fake.request_count, "chunk_resends": st["chunk_resends"]}


@pytest.mark.slow
def test_redis_sigkilled_with_aof_everysec_then_restarted_loses_nothing(shipped_redis, worker_on, openai_fake,
                                                                      figures):
    def sigkill_then_restart() -> None:
        shipped_redis.stop(kill=True)  # SIGKILL: the last second of AOF (everysec) may be gone
        time.sleep(1.0)
        shipped_redis.start()

    figures("redis_sigkill", run_through_redis_outage(shipped_redis, worker_on, openai_fake, 1000, "rk",
                                                      sigkill_then_restart))


@pytest.mark.slow
def test_redis_unreachable_for_30_seconds_loses_nothing(shipped_redis, worker_on, openai_fake, figures):
    """Longer than the ~15 s a worker's Redis client rides out: chunks meeting the outage are
    handed back (their messages stay in kombu's unacked hash, in the AOF) and run when it is back."""
    figures("redis_unreachable_30s", run_through_redis_outage(  # connections refused for 30 s
        shipped_redis, worker_on, openai_fake, 600, "ru", lambda: shipped_redis.restart(down_seconds=30.0)))
