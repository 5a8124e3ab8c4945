"""Without circuit breakers, a transient failure that outlasts the in-place retries goes back to
the queue with backoff (workers/requeue.py) instead of failing the item, bounded by
TIDYQ_MAX_REQUEUES: past it the items fail naming the cause."""

import pytest

from producers import Client
from shared.config import RetryConfig
from tests.fakes.answers import expected_outputs
from tests.reliability.conftest import SIG, direct_env, rows

NO_BREAKER = {"TIDYQ_BREAKER_ENABLED": "false", "TIDYQ_REQUEUE_BACKOFF_SECONDS": "0.5", "TIDYQ_CONCURRENCY_DIRECT": 1}


@pytest.mark.slow
def test_an_outage_longer_than_the_retries_requeues_then_succeeds(redis_url, start_worker, openai_fake):
    in_place = RetryConfig().max_retries + 1
    worker = start_worker(queues=["predict.direct"], concurrency=1, env=direct_env(openai_fake, **NO_BREAKER))
    openai_fake.fail_next(in_place + 1, 500)  # the first item's in-place attempts all fail, and one more
    inputs = rows(3, "nb")
    job = Client().submit_batch(inputs, SIG, backend="direct", chunk_size=3)
    st = job.wait(timeout=90, poll=0.1)
    assert st["counts"] == {"total": 3, "succeeded": 3, "failed": 0}, list(job.results(timeout=5))
    by_id = {r["custom_id"]: r for r in job.results(timeout=5)}
    for row in inputs:
        assert by_id[row["custom_id"]]["outputs"] == expected_outputs(row["inputs"], ["answer"])
    log = worker.log_path.read_text()
    assert '"event": "chunk_requeued"' in log and "ServerError" in log


@pytest.mark.slow
def test_a_provider_that_never_recovers_fails_the_items_after_max_requeues(redis_url, start_worker, openai_fake):
    env = direct_env(openai_fake, **(NO_BREAKER | {"TIDYQ_MAX_REQUEUES": 1, "TIDYQ_CONCURRENCY_DIRECT": 2}))
    start_worker(queues=["predict.direct"], concurrency=1, env=env)
    openai_fake.fail_next(10_000, 503)  # down for good (no Retry-After: an outage, not a rate limit)
    job = Client().submit_batch(rows(2, "nr"), SIG, backend="direct", chunk_size=2)
    st = job.wait(timeout=120, poll=0.1)
    assert st["counts"] == {"total": 2, "succeeded": 0, "failed": 2}
    in_place = RetryConfig().max_retries + 1
    assert openai_fake.request_count == 2 * 2 * in_place  # two runs (the first and one requeue), each in place
    for r in job.results(timeout=5):
        assert r["error"]["type"] == "RetryLater"
        assert "gave up after 1 requeues" in r["error"]["message"] and "ServerError" in r["error"]["message"]
