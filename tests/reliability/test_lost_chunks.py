"""Chunk messages the broker lost (what a worker SIGKILLed between kombu's BRPOP and its unacked
bookkeeping leaves behind, or messages removed by hand): the ledger sweeper sends them again and
every job completes with exactly one right result per item."""

import time

import pytest
import redis

from producers import Client
from shared import keys
from shared.ledger import parse_chunk_task_id
from tests.reliability.conftest import SIG, rows, wait_for
from workers.sweeper import task_ids_in

QUEUE = "predict.mock"


def remove_chunks(client: redis.Redis, job_id: str, count: int) -> list[str]:
    """Take ``count`` of ``job_id``'s chunk messages off the broker's list, as a lost BRPOP would."""
    removed = []
    for raw in client.lrange(QUEUE, 0, -1):
        ids = [t for t in task_ids_in([raw]) if (parse_chunk_task_id(t) or ("",))[0] == job_id]
        if ids and len(removed) < count and client.lrem(QUEUE, 1, raw) == 1:
            removed.append(ids[0])
    return removed


def assert_exact(client: Client, job, inputs: list[dict]) -> None:
    results = list(job.results(timeout=10))
    ids = [r["custom_id"] for r in results]
    assert len(ids) == len(set(ids)) == len(inputs)  # none twice, none missing
    by_id = {r["custom_id"]: r for r in results}
    for row in inputs:
        r = by_id[row["custom_id"]]
        assert r["status"] == "succeeded"
        assert r["outputs"]["answer"].endswith(f"({row['inputs']['question'][:40]})")  # its own item's answer


@pytest.mark.slow
def test_ten_jobs_with_two_lost_chunks_each_all_complete(redis_url, start_worker, figures):
    r = redis.Redis.from_url(redis_url)
    client = Client()
    jobs = []
    for run in range(10):
        inputs = rows(500, f"r{run}-")
        job = client.submit_batch(inputs, SIG, backend="mock", chunk_size=50)
        lost = remove_chunks(r, job.id, 2)
        assert len(lost) == 2
        jobs.append((job, inputs, lost))
    assert r.llen(QUEUE) == 10 * 8  # 20 of the 100 chunk messages are gone for good
    lost_at = time.monotonic()
    start_worker(queues=[QUEUE], concurrency=2,
                 env={"TIDYQ_LEDGER_LEASE_SECONDS": "2", "TIDYQ_SWEEP_INTERVAL": "0.5", "TIDYQ_CACHE_ENABLED": "false"})
    for job, _, _ in jobs:
        wait_for(lambda job=job: job.status()["status"] == "completed", 90, f"job {job.id} to complete")
    took = time.monotonic() - lost_at
    completed = 0
    for job, inputs, _ in jobs:
        st = job.status()
        assert st["counts"] == {"total": 500, "succeeded": 500, "failed": 0}
        assert st["chunk_resends"] == 2 and st["chunks_outstanding"] == 0
        assert_exact(client, job, inputs)
        completed += 1
    wait_for(lambda: r.zcard(keys.ledger_jobs()) == 0, 10, "the sweeper to drop the finished jobs' ledgers")
    figures("lost_chunks", {"runs": 10, "completed": completed, "lost_per_run": 2, "lease_s": 2, "sweep_s": 0.5,
                            "seconds_to_all_complete": round(took, 1)})


@pytest.mark.slow
def test_a_lost_chunk_is_back_within_a_minute_at_the_defaults(redis_url, start_worker, figures):
    r = redis.Redis.from_url(redis_url)
    client = Client()
    inputs = rows(100, "d")
    job = client.submit_batch(inputs, SIG, backend="mock", chunk_size=50)
    lost = remove_chunks(r, job.id, 1)  # before any worker runs: the message is gone for good
    lost_at = time.monotonic()
    start_worker(queues=[QUEUE], concurrency=1, env={"TIDYQ_CACHE_ENABLED": "false"})
    wait_for(lambda: job.status()["status"] == "completed", 75, "the job to complete")
    back = time.monotonic() - lost_at
    st = job.status()
    assert len(lost) == 1 and st["chunk_resends"] == 1
    assert_exact(client, job, inputs)
    assert back < 60
    figures("lost_chunk_default_settings", {"lost": 1, "seconds_to_complete": round(back, 1)})
