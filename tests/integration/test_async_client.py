"""AsyncClient against a real redis-server and real `celery -A workers worker` processes."""

import asyncio
import threading

import pytest
import redis

from producers import AsyncClient, JobFailed, JobNotFound, submission
from shared import keys
from shared.errors import BadInput
from shared.jobs import Item, JobKind

SIG = "question -> answer"


def rows(n, prefix="q"):
    return [{"custom_id": f"{prefix}{i}", "inputs": {"question": f"What is {i} plus {i}?"}} for i in range(n)]


def test_hundred_concurrent_predicts_each_get_their_own_answer(redis_url, mock_worker):
    async def main():
        async with AsyncClient() as client:
            questions = [f"question number {i}?" for i in range(100)]
            jobs = await asyncio.gather(*(client.submit_predict(SIG, {"question": q}, backend="mock")
                                          for q in questions))
            outputs = await asyncio.gather(*(job.result(timeout=120) for job in jobs))
            assert len({job.id for job in jobs}) == 100
            for q, out in zip(questions, outputs, strict=True):
                assert out["answer"].endswith(f"({q[:40]})")  # the mock echoes the item's own input
            assert len(client._stores) == 1  # one pool for this loop
            statuses = await asyncio.gather(*(job.status() for job in jobs))
            assert {st["status"] for st in statuses} == {"completed"}
            listed = await client.list_jobs(kind="predict", limit=500)
            assert {st["id"] for st in listed} == {job.id for job in jobs}

    asyncio.run(main())


def test_batch_results_stream_with_async_for_and_match_the_sync_client(redis_url, mock_worker):
    from producers import Client

    async def main():
        async with AsyncClient() as client:
            job = await client.submit_batch(rows(120), SIG, backend="mock", chunk_size=10)
            got = [row async for row in job.results(timeout=120)]
            status = await job.status()
            return job.id, got, status

    job_id, got, status = asyncio.run(main())
    assert sorted(r["custom_id"] for r in got) == sorted(f"q{i}" for i in range(120))
    assert status["counts"] == {"total": 120, "succeeded": 120, "failed": 0}
    sync_job = Client().job(job_id)  # the same keys: the sync client reads what the async one wrote
    assert sync_job.status() == status
    assert sorted(r["custom_id"] for r in sync_job.results(follow=False)) == sorted(r["custom_id"] for r in got)


def test_bad_input_names_the_field_and_enqueues_nothing(redis_url):
    async def main():
        async with AsyncClient() as client:
            with pytest.raises(BadInput) as err:
                await client.submit_predict(SIG, {"question": "x", "extra": 1}, backend="mock")
            assert "inputs.extra" in str(err.value)
            with pytest.raises(BadInput) as err:
                await client.submit_batch([{"custom_id": "a", "inputs": {"question": "x"}},
                                           {"custom_id": "a", "inputs": {"question": "y"}}], SIG, backend="mock")
            assert "rows[1]: field 'custom_id'" in str(err.value)
            with pytest.raises(BadInput):
                await client.submit_batch([], SIG, backend="mock")
            with pytest.raises(JobNotFound):
                await client.job("nope")

    asyncio.run(main())
    r = redis.Redis.from_url(redis_url)
    assert r.zcard(keys.jobs_index()) == 0 and r.llen("predict.mock") == 0


def test_cancelled_result_wait_leaves_the_client_usable_and_cancel_ends_a_queued_job(redis_url):
    async def main():
        async with AsyncClient() as client:
            job = await client.submit_batch(rows(5), SIG, backend="mock")  # no worker: stays queued
            waiter = asyncio.create_task(job.result(timeout=30))
            await asyncio.sleep(0.2)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert client.store.events._waiters == {}  # the cancelled wait unregistered itself
            assert await job.cancel() == "cancelled"
            with pytest.raises(JobFailed):
                await job.result(timeout=5)
            again = await client.submit_batch(rows(2), SIG, backend="mock", idempotency_key="k1")
            same = await client.submit_batch(rows(2), SIG, backend="mock", idempotency_key="k1")
            assert same.existing and same.id == again.id
            with pytest.raises(BadInput, match="still queued"):
                await client.retry(again.id)

    asyncio.run(main())


def test_submit_cancelled_while_sending_marks_the_job_failed(redis_url):
    release = threading.Event()

    def slow_items():
        yield Item(custom_id="1", inputs={"question": "a"})
        release.wait(10)  # the enqueue thread is stuck here when the submit is cancelled
        yield Item(custom_id="2", inputs={"question": "b"})

    async def main():
        async with AsyncClient() as client:
            target = submission.build_target(client.settings, SIG, None, "mock", None, None)
            task = asyncio.create_task(client._submit(JobKind.BATCH, target, slow_items, 2, None, chunk_size=1))
            while await client.store.r.zcard(keys.jobs_index()) == 0:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            job_id = (await client.store.r.zrange(keys.jobs_index(), 0, 0))[0].decode()
            status = (await client.store.status(job_id)).model_dump()
            release.set()
            return status

    status = asyncio.run(main())  # returns after the loop's executor threads finished
    assert status["status"].value == "failed" and "enqueue interrupted: CancelledError" in status["error"]
    assert redis.Redis.from_url(redis_url).llen("predict.mock") == 1  # the sending thread stopped after chunk 0


def test_retry_resubmits_only_the_failed_items(redis_url, start_worker, openai_fake):
    env = {"TIDYQ_API_BASE": openai_fake.base_url, "TIDYQ_API_KEY": "sk-test-async-4242",
           "TIDYQ_MODEL": "openai/gpt-4o-mini", "TIDYQ_CACHE_ENABLED": "false", "TIDYQ_CONCURRENCY_DIRECT": "1"}
    start_worker(queues=["predict.direct"], env=env)
    openai_fake.fail_next(3, status=400)  # a bad request is not retried in place: 3 items fail

    async def main():
        async with AsyncClient() as client:
            job = await client.submit_batch(rows(8), SIG, backend="direct")
            done = await job.wait(timeout=60)
            assert done["counts"] == {"total": 8, "succeeded": 5, "failed": 3}
            failed = sorted([r["custom_id"] async for r in job.results(timeout=5) if r["status"] == "failed"])
            retry = await job.retry()
            assert retry is not None and retry.id != job.id
            assert (await retry.status())["retry_of"] == job.id
            assert (await job.status())["retried_by"] == retry.id
            redo = [r async for r in retry.results(timeout=60)]
            assert sorted(r["custom_id"] for r in redo) == failed
            assert all(r["status"] == "succeeded" for r in redo)
            assert await retry.retry() is None

    asyncio.run(main())
