"""Job state in a real redis-server: idempotent results, state machine, cancel, expiry."""

import threading
import time

import pytest
import redis

from shared import keys
from shared.jobs import ItemResult, JobSpec, JobState
from shared.store import JobNotFound, JobStore, JobTimeout


@pytest.fixture
def store(redis_url):
    return JobStore(redis.Redis.from_url(redis_url))


def make_job(store, job_id="job1", total=3, kind="batch", ttl=60):
    spec = JobSpec(id=job_id, kind=kind, signature="question -> answer", backend="mock", total=total, chunk_size=2,
                   ttl_seconds=ttl, created_at=time.time())
    store.create_job(spec)
    return spec


def ok(cid):
    return ItemResult(custom_id=cid, status="succeeded", outputs={"answer": cid}, backend="mock", attempts=1), None


def bad(cid, inputs=None):
    return ItemResult.failure(cid, "ProviderError", "boom"), inputs or {"question": cid}


def test_new_job_is_queued_with_counts(store):
    make_job(store)
    st = store.status("job1")
    assert st.status is JobState.QUEUED
    assert st.counts.model_dump() == {"total": 3, "succeeded": 0, "failed": 0}
    assert st.timestamps["created"] and st.timestamps["started"] is None
    with pytest.raises(JobNotFound):
        store.status("nope")


def test_results_are_written_once_even_when_a_chunk_is_redelivered(store):
    make_job(store)
    assert store.chunk_start("job1", "0") == "run"
    assert store.status("job1").status is JobState.RUNNING
    assert store.record_results("job1", [ok("a"), bad("b")]) == 2
    # the same chunk again (redelivery), with a different outcome for "a": ignored
    assert store.record_results("job1", [bad("a"), bad("b")]) == 0
    st = store.status("job1")
    assert (st.counts.succeeded, st.counts.failed, st.status) == (1, 1, JobState.RUNNING)
    assert store.record_results("job1", [ok("c")]) == 1
    st = store.status("job1")
    assert st.status is JobState.COMPLETED and st.timestamps["finished"]
    rows = list(store.iter_results("job1", timeout=1))
    assert [r["custom_id"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["status"] == "succeeded" and rows[1]["error"]["type"] == "ProviderError"
    assert [(i.custom_id, i.inputs) for i in store.iter_failed_items("job1")] == [("b", {"question": "b"})]
    assert store.existing_results("job1", ["a", "x", "c"]) == {"a", "c"}


def test_a_failed_predict_job_is_failed_and_a_batch_with_failures_is_completed(store):
    make_job(store, "p", total=1, kind="predict")
    store.record_results("p", [bad("1")])
    assert store.status("p").status is JobState.FAILED
    make_job(store, "b", total=1)
    store.record_results("b", [bad("1")])
    assert store.status("b").status is JobState.COMPLETED


def test_cancel_of_a_queued_job_is_immediate_and_pending_chunks_skip(store):
    make_job(store)
    assert store.cancel("job1") is JobState.CANCELLED
    assert store.chunk_start("job1", "0") == "cancelled"
    assert store.cancel("job1") is JobState.CANCELLED  # idempotent
    with pytest.raises(JobNotFound):
        store.cancel("nope")


def test_cancel_while_a_chunk_runs_waits_for_it_and_keeps_partial_results(store):
    make_job(store, total=4)
    assert store.chunk_start("job1", "0") == "run"
    store.record_results("job1", [ok("a")])
    assert store.cancel("job1") is JobState.CANCELLING
    assert store.chunk_start("job1", "1") == "cancelling"  # a pending chunk does not start
    store.record_results("job1", [ok("b")])  # the running chunk's in-flight item still lands
    assert store.chunk_end("job1", "0") == "cancelled"
    st = store.status("job1")
    assert st.status is JobState.CANCELLED and st.counts.succeeded == 2
    assert len(list(store.iter_results("job1", timeout=1))) == 2


def test_every_key_of_a_finished_job_expires(store):
    make_job(store, total=2, ttl=30)
    store.chunk_start("job1", "0")
    store.record_results("job1", [ok("a"), bad("b")])
    store.chunk_end("job1", "0")
    for key in (keys.job("job1"), keys.job_results("job1"), keys.job_order("job1"), keys.job_failed_inputs("job1")):
        assert 0 < store.r.ttl(key) <= 30, key
    assert not store.r.exists(keys.job_running_chunks("job1"))
    assert all(k.decode().startswith("tidyq:") for k in store.r.keys("*"))


def test_results_stream_as_they_arrive_and_end_with_the_job(store):
    make_job(store, total=3)
    got = []

    def produce():
        for cid in "abc":
            time.sleep(0.05)
            store.record_results("job1", [ok(cid)])

    t = threading.Thread(target=produce)
    t.start()
    for row in store.iter_results("job1", timeout=10):
        got.append((row["custom_id"], time.monotonic()))
    t.join()
    assert [g[0] for g in got] == ["a", "b", "c"]
    assert got[-1][1] - got[0][1] > 0.05  # streamed, not read once at the end


def test_results_timeout(store):
    make_job(store, total=2)
    store.record_results("job1", [ok("a")])
    it = store.iter_results("job1", timeout=0.2)
    assert next(it)["custom_id"] == "a"
    with pytest.raises(JobTimeout):
        next(it)


def test_idempotency_key_binds_to_the_first_live_job(store):
    make_job(store, "first")
    assert store.claim_idempotency("k", "first", 60) is None
    make_job(store, "second")
    assert store.claim_idempotency("k", "second", 60) == "first"
    store.delete_job("first")
    assert store.claim_idempotency("k", "second", 60) is None  # a dead holder is replaced


def test_fail_job_and_results_of_missing_job(store):
    make_job(store)
    assert store.fail_job("job1", "enqueue interrupted") == "failed"
    st = store.status("job1")
    assert st.status is JobState.FAILED and st.error == "enqueue interrupted"
    assert store.record_results("gone", [ok("a")]) == -1
    with pytest.raises(JobNotFound):
        list(store.iter_results("gone"))


def test_list_jobs_newest_first_filtered_and_pruned_of_expired_jobs(store):
    for i in range(5):
        spec = JobSpec(id=f"j{i}", kind="batch" if i % 2 else "predict", signature="q -> a", backend="mock",
                       total=1, chunk_size=1, ttl_seconds=60, created_at=1000.0 + i)
        store.create_job(spec)
    assert store.chunk_start("j3", "0") == "run"
    assert [s.id for s in store.list_jobs()] == ["j4", "j3", "j2", "j1", "j0"]
    assert [s.id for s in store.list_jobs(limit=2)] == ["j4", "j3"]
    assert [s.id for s in store.list_jobs(statuses=["running"])] == ["j3"]
    assert [s.id for s in store.list_jobs(kind="batch")] == ["j3", "j1"]
    # a job whose hash expired drops out of the listing and out of the index
    store.r.delete(keys.job("j2"))
    assert [s.id for s in store.list_jobs(limit=3)] == ["j4", "j3", "j1"]
    assert store.r.zscore(keys.jobs_index(), "j2") is None
    with pytest.raises(ValueError):
        store.list_jobs(statuses=["bogus"])


def test_listed_jobs_carry_the_usage_their_status_shows(store):
    """`tidyq jobs`, GET /jobs and the MCP list read list_jobs: each row shows the job's LM usage
    (its tracking aggregate), as status() does, and None for a job no chunk has run for yet."""
    for i in range(2):
        store.create_job(JobSpec(id=f"u{i}", kind="batch", signature="q -> a", backend="mock", total=1,
                                 chunk_size=1, ttl_seconds=60, created_at=2000.0 + i))
    store.r.hset(keys.job_tracking("u1"), mapping={"calls": 3, "attempts": 4, "retries": 1, "input_tokens": 120,
                                                    "output_tokens": 9, "cost_usd": 0.001234})
    listed = {s.id: s for s in store.list_jobs()}
    assert listed["u1"].usage == store.status("u1").usage == {
        "lm_calls": 3, "attempts": 4, "retries": 1, "input_tokens": 120, "output_tokens": 9, "cost_usd": 0.001234}
    assert listed["u0"].usage is None
    store.r.hset(keys.job_tracking("u1"), "cost_usd", "not-a-number")  # one damaged counter hides only itself
    assert store.list_jobs()[0].usage == {"lm_calls": 3, "attempts": 4, "retries": 1, "input_tokens": 120,
                                          "output_tokens": 9}


def test_create_job_trims_index_entries_past_the_horizon(store):
    store.r.zadd(keys.jobs_index(), {"ancient": 1.0, "recent": time.time() - 3600})
    make_job(store, "fresh")
    assert store.r.zscore(keys.jobs_index(), "ancient") is None
    assert store.r.zscore(keys.jobs_index(), "recent") is not None
    assert store.r.zscore(keys.jobs_index(), "fresh") is not None
