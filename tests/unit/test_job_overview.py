"""producers/job_overview.py on a real redis-server: rows joined from the job hash and the tracking
hash, error types read incrementally, failed items paged by a stable cursor."""

from __future__ import annotations

import time

import pytest
import redis

from producers.job_overview import JobsReader, items_per_second
from shared import keys
from shared.jobs import ItemResult, JobSpec, new_job_id
from shared.store import JobNotFound, JobStore


def make_job(store: JobStore, total: int, *, backend: str = "mock", model: str | None = None,
             created_at: float | None = None) -> str:
    spec = JobSpec(id=new_job_id(), kind="batch", signature="question -> answer", backend=backend, model=model,
                   total=total, chunk_size=10, ttl_seconds=600, created_at=created_at or time.time())
    store.create_job(spec)
    return spec.id


def record(store: JobStore, job_id: str, outcomes: list[tuple[str, str | None]]) -> None:
    """outcomes: (custom_id, error type or None for a success)."""
    store.chunk_start(job_id, "c")
    store.record_results(job_id, [
        (ItemResult(custom_id=cid, status="succeeded", outputs={"answer": "ok"}) if err is None
         else ItemResult.failure(cid, err, f"{err} for {cid}"), {"question": f"q {cid}"})
        for cid, err in outcomes])


def test_rows_carry_counts_rate_cost_and_run_id(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    old = make_job(store, 3, created_at=time.time() - 10)
    new = make_job(store, 4, backend="direct", model="openai/gpt-4o-mini")
    record(store, new, [("a", None), ("b", "LMError"), ("c", None)])
    client.hset(keys.job_tracking(new), "cost_usd", "0.0125")
    client.hset(keys.job(new), mapping={"started_at": repr(time.time() - 2.0), "mlflow_run_id": "abc123"})
    reader = JobsReader(client)
    rows = reader.rows(limit=10, with_errors=True)
    assert [r.id for r in rows] == [new, old]  # newest first
    row = rows[0]
    assert (row.total, row.succeeded, row.failed, row.done) == (4, 2, 1, 3)
    assert row.backend == "direct" and row.model == "openai/gpt-4o-mini" and row.status == "running"
    assert row.cost_usd == 0.0125 and row.mlflow_run_id == "abc123"
    assert 1.0 <= row.items_per_second <= 1.6  # 3 items over ~2 s
    assert row.error_types == {"LMError": 1}
    assert rows[1].started_at is None and rows[1].items_per_second is None and rows[1].cost_usd is None
    assert rows[1].to_json()["fraction"] == 0.0
    assert [r.id for r in reader.rows(statuses=["queued"], limit=10)] == [old]


def test_items_per_second_uses_the_end_time_of_a_finished_job():
    assert items_per_second(100, 10.0, 20.0, now=1000.0) == 10.0
    assert items_per_second(100, 10.0, None, now=60.0) == 2.0
    assert items_per_second(5, None, None, now=60.0) is None
    assert items_per_second(5, 10.0, 10.0, now=60.0) is None


def test_error_types_read_only_new_results_and_stay_exact(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    job = make_job(store, 30)
    record(store, job, [(f"a{i}", "LMError" if i % 3 == 0 else None) for i in range(12)])
    reader = JobsReader(client)
    assert reader.error_types(job) == {"LMError": 4}
    record(store, job, [(f"b{i}", "BadInput" if i < 5 else "LMError") for i in range(6)])
    assert reader.error_types(job) == {"BadInput": 5, "LMError": 5}
    # the first read went up to 12 results; a fresh reader counts everything again, the same numbers
    assert JobsReader(client).error_types(job) == {"BadInput": 5, "LMError": 5}


def test_failed_items_page_through_every_failure_once(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    job = make_job(store, 2500)
    outcomes = [(f"i{i}", "LMError" if i % 7 == 0 else None) for i in range(2500)]
    for start in range(0, 2500, 500):
        record(store, job, outcomes[start:start + 500])
    expected = [cid for cid, err in outcomes if err]
    reader = JobsReader(client)
    seen, cursor, pages = [], 0, 0
    while cursor is not None:
        page, cursor = reader.failed_items(job, cursor=cursor, limit=50)
        assert len(page) <= 50
        seen += [r["custom_id"] for r in page]
        pages += 1
    assert seen == expected and pages == -(-len(expected) // 50)
    # a scan budget smaller than the gap between failures returns an empty page and a cursor to go on
    page, cursor = reader.failed_items(job, cursor=1, limit=5, max_scan=3)
    assert page == [] and cursor == 4


def test_error_types_of_a_huge_job_are_counted_a_budget_per_call(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    job = make_job(store, 25)
    record(store, job, [(f"a{i}", "LMError" if i % 2 else None) for i in range(25)])
    reader = JobsReader(client, error_read_budget=10)
    partial = reader.rows(limit=1, with_errors=True)[0]
    assert partial.error_types == {"LMError": 5} and partial.error_types_partial and reader.counted(job) == 10
    reader.error_types(job)
    done = reader.rows(limit=1, with_errors=True)[0]
    assert done.error_types == {"LMError": 12} and not done.error_types_partial


def test_unreadable_numbers_are_unknown_and_the_error_cache_is_bounded(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    jobs = [make_job(store, 2) for _ in range(3)]
    for job in jobs:
        record(store, job, [("a", "LMError")])
    client.hset(keys.job_tracking(jobs[0]), "cost_usd", "not-a-number")
    reader = JobsReader(client, cached_jobs=2)
    rows = {r.id: r for r in reader.rows(limit=5, with_errors=True)}
    assert rows[jobs[0]].cost_usd is None and all(r.error_types == {"LMError": 1} for r in rows.values())
    assert reader.counted(jobs[2]) == 0 and reader.counted(jobs[0]) == 1  # newest first: jobs[2] went out
    with pytest.raises(JobNotFound):
        reader.failed_items("no-such-job")
    with pytest.raises(JobNotFound):
        reader.row("no-such-job")


def test_error_types_read_the_same_through_a_decoding_client(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(redis.Redis.from_url(redis_url))
    job = make_job(store, 4)
    record(store, job, [("a", None), ("b", "LMError"), ("c", None), ("d", "LMError")])
    reader = JobsReader(client)
    assert reader.error_types(job) == {"LMError": 2}
    assert [r["custom_id"] for r in reader.failed_items(job)[0]] == ["b", "d"]


def test_rows_of_keeps_the_given_order_and_leaves_out_expired_jobs(redis_url):
    store = JobStore(redis.Redis.from_url(redis_url))
    first, second = make_job(store, 1), make_job(store, 2)
    rows = JobsReader(store.r).rows_of([second, "gone-job", first])
    assert [r.id for r in rows] == [second, first]


def test_one_listing_shares_one_error_read_budget(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    jobs = [make_job(store, 8) for _ in range(3)]
    for job in jobs:
        record(store, job, [(f"i{i}", "LMError") for i in range(8)])
    reader = JobsReader(client, error_read_budget=12)
    rows = reader.rows(limit=3, with_errors=True)  # newest first: 8 read for the first, 4 for the second, 0 then
    assert [(r.error_types, r.error_types_partial) for r in rows] == [
        ({"LMError": 8}, False), ({"LMError": 4}, True), ({}, True)]
    assert [r.error_types for r in reader.rows(limit=3, with_errors=True)] == [
        {"LMError": 8}, {"LMError": 8}, {"LMError": 8}]
