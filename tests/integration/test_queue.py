"""The queue end to end: real redis-server, real `celery -A workers worker` processes, the mock
backend and the OpenAI stand-in (tests/fakes)."""

import time

import pytest
import redis

from producers import Client, Job, JobNotFound
from shared import keys
from shared.jobs import JobSpec, new_job_id
from tests.fakes.answers import expected_outputs
from tests.waiting import wait_for

SIG = "question -> answer"
SECRET = "sk-test-queue-secret-4242"


def rows(n, prefix="q"):
    return [{"custom_id": f"{prefix}{i}", "inputs": {"question": f"What is {i} plus {i}?"}} for i in range(n)]


def direct_env(fake, **extra):
    env = {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": SECRET, "TIDYQ_MODEL": "openai/gpt-4o-mini",
           "TIDYQ_CACHE_ENABLED": "false"}
    return env | {k: str(v) for k, v in extra.items()}


def test_mock_batch_returns_one_result_per_input(redis_url, mock_worker):
    client = Client()
    inputs = rows(300)
    job = client.submit_batch(inputs, SIG, backend="mock")
    results = list(job.results(timeout=60))
    assert sorted(r["custom_id"] for r in results) == sorted(r["custom_id"] for r in inputs)
    by_id = {r["custom_id"]: r for r in results}
    for row in inputs:
        r = by_id[row["custom_id"]]
        assert r["status"] == "succeeded" and r["backend"] == "mock"
        # the mock echoes the start of the item's own input: a result on the wrong item fails here
        assert r["outputs"]["answer"].endswith(f"({row['inputs']['question'][:40]})")
    st = job.status()
    assert st["status"] == "completed" and st["counts"] == {"total": 300, "succeeded": 300, "failed": 0}
    assert client.submit_predict(SIG, {"question": "hi"}, backend="mock").result(timeout=20)["answer"]


def test_stand_in_provider_batch_is_exact_and_concurrent(redis_url, start_worker, openai_fake):
    openai_fake.set_latency(0.02)
    worker = start_worker(queues=["predict.direct"], concurrency=1, env=direct_env(openai_fake))
    inputs = rows(300)
    job = Client().submit_batch(inputs, SIG, backend="direct", chunk_size=100)
    results = list(job.results(timeout=120))
    assert len(results) == 300 and len({r["custom_id"] for r in results}) == 300
    by_id = {r["custom_id"]: r for r in results}
    for row in inputs:
        r = by_id[row["custom_id"]]
        assert r["status"] == "succeeded", r
        assert r["outputs"] == expected_outputs(row["inputs"], ["answer"])
        assert r["backend"] == "direct" and r["attempts"] == 1
    assert openai_fake.request_count == 300
    assert openai_fake.max_in_flight > 1  # one worker process keeps several provider calls in flight
    log = worker.log_path.read_text()
    assert SECRET not in log and "chunk_done" in log


def test_a_direct_job_waits_while_only_predict_mock_is_served(redis_url, start_worker, openai_fake):
    start_worker(queues=["predict.mock"])
    client = Client()
    direct = client.submit_batch(rows(5), SIG, backend="direct", model="openai/gpt-4o-mini")
    mock = client.submit_batch(rows(5), SIG, backend="mock")
    assert mock.wait(timeout=30)["status"] == "completed"
    st = direct.status()
    assert st["status"] == "queued" and st["counts"]["succeeded"] == 0
    assert redis.Redis.from_url(redis_url).llen("predict.direct") == 1  # one chunk, untouched
    start_worker(queues=["predict.direct"], env=direct_env(openai_fake))
    assert direct.wait(timeout=60)["counts"]["succeeded"] == 5


def test_cancel_stops_pending_chunks_and_keeps_partial_results(redis_url, start_worker):
    start_worker(queues=["predict.mock"], concurrency=1)
    job = Client().submit_batch(rows(4000), SIG, backend="mock", chunk_size=10)
    wait_for(lambda: job.status()["counts"]["succeeded"] >= 10, 30, "first results")
    assert job.cancel() in ("cancelling", "cancelled")
    st = wait_for(lambda: (s := job.status())["status"] == "cancelled" and s, 30, "cancelled")
    done = st["counts"]["succeeded"]
    assert 10 <= done < 4000
    time.sleep(1.0)  # pending chunks are skipped: nothing more arrives
    assert job.status()["counts"]["succeeded"] == done
    assert len(list(job.results(timeout=5))) == done
    assert st["timestamps"]["finished"]


def test_results_expire_after_the_configured_ttl(redis_url, mock_worker, monkeypatch):
    monkeypatch.setenv("TIDYQ_RESULT_TTL_SECONDS", "2")
    client = Client()
    job = client.submit_batch(rows(20), SIG, backend="mock")
    assert job.wait(timeout=30)["status"] == "completed"
    assert 0 < job.status()["expires_in_seconds"] <= 2
    r = redis.Redis.from_url(redis_url)
    assert r.keys(keys.job_results(job.id))
    wait_for(lambda: r.keys("tidyq:job:*") == [], 10, "every key of the job to expire")  # Redis TTLs: ~2 s
    with pytest.raises(JobNotFound):
        job.status()


def _job_without_chunks(client, total, signature=SIG):
    """A job written to the store whose chunk messages the test sends by hand."""
    spec = JobSpec(id=new_job_id(), kind="batch", signature=signature, backend="mock", total=total, chunk_size=1,
                   ttl_seconds=60, created_at=time.time())
    client.store.create_job(spec)
    return Job(client, spec.id), spec.model_dump(mode="json")


def test_poison_messages_become_failed_items_and_the_worker_survives(redis_url, mock_worker):
    client = Client()
    send = lambda payload: client.app.send_task("tidyq.predict.chunk", args=[payload], queue="predict.mock")  # noqa: E731
    job, raw = _job_without_chunks(client, total=3)
    send("not a chunk")
    send({"job": {"id": "no-such-job"}, "items": []})
    send({"job": raw, "chunk": 0, "items": [{"custom_id": "p1", "inputs": {"question": "x"}, "extra": 1}]})
    send({"job": raw, "chunk": 1, "items": [{"custom_id": "p2", "inputs": {"qestion": "typo"}}]})
    send({"job": raw, "chunk": 2, "items": [{"custom_id": "p3", "inputs": {"question": "fine"}}]})
    st = job.wait(timeout=30)
    assert st["status"] == "completed" and st["counts"] == {"total": 3, "succeeded": 1, "failed": 2}
    failed = {r["custom_id"]: r["error"] for r in job.results(timeout=5) if r["status"] == "failed"}
    assert failed["p1"]["type"] == "BadInput" and "malformed chunk" in failed["p1"]["message"]
    assert failed["p2"]["type"] == "BadInput" and "qestion" in failed["p2"]["message"]
    # a signature only the worker sees (the producer would have refused it)
    badsig, raw = _job_without_chunks(client, total=1, signature="question -> answer: notatype")
    send({"job": raw, "chunk": 0, "items": [{"custom_id": "1", "inputs": {"question": "x"}}]})
    assert badsig.wait(timeout=30)["counts"]["failed"] == 1
    assert next(badsig.results(timeout=5))["error"]["type"] == "BadInput"
    assert mock_worker.alive()
    assert client.submit_batch(rows(5), SIG, backend="mock").wait(timeout=30)["counts"]["succeeded"] == 5


def test_retry_resubmits_only_the_failed_items(redis_url, start_worker, openai_fake):
    start_worker(queues=["predict.direct"], env=direct_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=1))
    openai_fake.fail_next(4, status=400)  # a bad request is not retried in place: 4 items fail
    client = Client()
    job = client.submit_batch(rows(20), SIG, backend="direct")
    st = job.wait(timeout=60)
    assert st["status"] == "completed" and st["counts"] == {"total": 20, "succeeded": 16, "failed": 4}
    failed = sorted(r["custom_id"] for r in job.results(timeout=5) if r["status"] == "failed")
    again = job.retry()
    assert again.status()["retry_of"] == job.id and job.status()["retried_by"] == again.id
    redo = list(again.results(timeout=60))
    assert sorted(r["custom_id"] for r in redo) == failed
    assert all(r["status"] == "succeeded" for r in redo)
    assert again.retry() is None  # nothing failed this time


def test_idempotency_key_returns_the_existing_job(redis_url, mock_worker):
    client = Client()
    first = client.submit_batch(rows(10), SIG, backend="mock", idempotency_key="order-42")
    second = client.submit_batch(rows(10), SIG, backend="mock", idempotency_key="order-42")
    assert second.id == first.id and second.existing and not first.existing
    first.wait(timeout=30)
    assert len(list(second.results(timeout=10))) == 10
    assert redis.Redis.from_url(redis_url).keys("tidyq:job:{*}") == [keys.job(first.id).encode()]


@pytest.mark.slow
def test_a_long_provider_wait_goes_back_to_the_queue_without_holding_the_worker(redis_url, start_worker, openai_fake):
    start_worker(concurrency=1, env=direct_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=1))
    openai_fake.fail_next(1, status=429, retry_after=10.5)  # above RetryConfig.max_inline_wait (10 s)
    client = Client()
    slow = client.submit_batch(rows(3), SIG, backend="direct")
    wait_for(lambda: openai_fake.request_count >= 1, 20, "the 429")
    # the only pool process is free: another job runs while the direct items wait in the queue
    quick = client.submit_batch(rows(5, "m"), SIG, backend="mock")
    assert quick.wait(timeout=8)["status"] == "completed"
    assert slow.status()["status"] == "running"
    st = slow.wait(timeout=40)
    assert st["counts"] == {"total": 3, "succeeded": 3, "failed": 0}
    assert sorted(r["custom_id"] for r in slow.results(timeout=5)) == ["q0", "q1", "q2"]


@pytest.mark.slow
def test_a_killed_worker_s_chunk_is_redelivered_without_duplicates(redis_url, start_worker, openai_fake):
    env = direct_env(openai_fake, TIDYQ_TASK_TIME_LIMIT=4, TIDYQ_VISIBILITY_TIMEOUT=5, TIDYQ_CONCURRENCY_DIRECT=2)
    openai_fake.set_latency(0.25)
    first = start_worker(queues=["predict.direct"], env=env)
    job = Client().submit_batch(rows(24), SIG, backend="direct", chunk_size=12)
    wait_for(lambda: job.status()["counts"]["succeeded"] >= 2, 30, "first results")
    first.kill()
    time.sleep(5.5)  # past the visibility timeout: the unacked chunk is restored by the next worker
    start_worker(queues=["predict.direct"], env=env)
    st = job.wait(timeout=60)
    assert st["counts"] == {"total": 24, "succeeded": 24, "failed": 0}
    results = list(job.results(timeout=5))
    assert len(results) == 24 and len({r["custom_id"] for r in results}) == 24


@pytest.mark.slow
def test_a_chunk_at_its_soft_time_limit_keeps_what_finished_and_requeues_the_rest(redis_url, start_worker,
                                                                                  openai_fake):
    # hard limit 4 s -> soft limit 3 s; each call takes 0.6 s, two in flight: a 16-item chunk
    # (~5 s of work) cannot finish in one run, so it is cut, stored, requeued and finished later
    env = direct_env(openai_fake, TIDYQ_TASK_TIME_LIMIT=4, TIDYQ_CONCURRENCY_DIRECT=2, TIDYQ_MAX_REQUEUES=30)
    openai_fake.set_latency(0.6)
    worker = start_worker(queues=["predict.direct"], env=env)
    job = Client().submit_batch(rows(16), SIG, backend="direct", chunk_size=16)
    st = job.wait(timeout=90)
    assert st["counts"] == {"total": 16, "succeeded": 16, "failed": 0}
    assert len({r["custom_id"] for r in job.results(timeout=5)}) == 16
    log = worker.log_path.read_text()
    assert "chunk_interrupted" in log and "SoftTimeLimitExceeded" in log and "chunk_requeued" in log
    assert worker.alive()
