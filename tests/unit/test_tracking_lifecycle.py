"""The job's MLflow run follows the job (real redis-server, real sqlite MLflow store): RUNNING from
the first chunk with the job's start time, stepped progress at most once per interval, and an end
at the job's real end time with FINISHED / FAILED (counts, top error types) / KILLED."""

import time

import pytest

from shared import keys, tracking
from shared.config import get_settings
from shared.jobs import ItemResult, JobKind, JobSpec
from shared.store import JobStore
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)
from tests.unit.test_job_telling import in_process_chunks  # noqa: F401  (fixture)
from tests.waiting import wait_for


@pytest.fixture
def settings(mlflow_uri, monkeypatch):
    monkeypatch.setenv("TIDYQ_MLFLOW_PROGRESS_INTERVAL", "0.3")
    return get_settings()


def _running_job(redis_url, n):
    store = JobStore.from_url(redis_url)
    spec = JobSpec(id=f"job{time.time_ns()}", kind=JobKind.BATCH, signature="question -> answer", backend="mock",
                   total=n, chunk_size=2, ttl_seconds=600, created_at=time.time() - 2.0)
    store.create_job(spec)
    assert store.chunk_start(spec.id, "0") == "run"
    return store, spec


def _ok(i):
    return ItemResult(custom_id=str(i), status="succeeded", outputs={"answer": "x"}, attempts=1)


def _bad(i, error_type):
    return ItemResult.failure(str(i), error_type, "no key for the provider", attempts=2)


def _run(mlflow_uri, run_id):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_uri).get_run(run_id)


def test_run_is_running_from_the_first_chunk_and_ends_failed_at_the_jobs_real_times(redis_url, settings, mlflow_uri):
    from mlflow import MlflowClient

    store, spec = _running_job(redis_url, 4)
    run_id = tracking.start_job(spec.id, store.r, settings)
    assert run_id and tracking.start_job(spec.id, store.r, settings) is None  # the first chunk creates it, once
    started_at = float(store.r.hget(keys.job(spec.id), "started_at"))
    run = _run(mlflow_uri, run_id)
    assert run.info.status == "RUNNING" and run.info.start_time == int(started_at * 1000)
    assert run.data.tags["tidyq.job_id"] == spec.id and run.data.params["items"] == "4"

    store.record_results(spec.id, [(_ok(0), None), (_bad(1, "LMNotConfiguredError"), {"question": "q"})])
    tracking.finish_job(spec.id, store.r, settings)  # progress, step = items done (on the tracking thread)
    assert tracking.drain()
    tracking.finish_job(spec.id, store.r, settings)  # within the interval: nothing more is logged
    assert tracking.drain()
    history = MlflowClient(mlflow_uri).get_metric_history(run_id, "progress.done")
    assert [(h.step, h.value) for h in history] == [(2, 2.0)]
    time.sleep(0.35)
    store.record_results(spec.id, [(_bad(2, "LMNotConfiguredError"), {"question": "q"})])
    tracking.finish_job(spec.id, store.r, settings)
    assert tracking.drain()
    history = MlflowClient(mlflow_uri).get_metric_history(run_id, "progress.done")
    assert [(h.step, h.value) for h in history] == [(2, 2.0), (3, 3.0)]
    assert _run(mlflow_uri, run_id).info.status == "RUNNING"

    store.record_results(spec.id, [(_bad(3, "LMTimeoutError"), {"question": "q"})])
    assert tracking.finish_job(spec.id, store.r, settings) == run_id
    finished_at = float(store.r.hget(keys.job(spec.id), "finished_at"))
    run = _run(mlflow_uri, run_id)
    assert run.info.status == "FAILED" and run.info.end_time == int(finished_at * 1000)
    assert run.info.start_time == int(started_at * 1000)
    m, tags = run.data.metrics, run.data.tags
    assert (m["succeeded"], m["failed"], m["errors.LMNotConfiguredError"], m["errors.LMTimeoutError"]) == (1, 3, 2, 1)
    assert m["duration_s"] == pytest.approx(finished_at - started_at)
    assert m["queue_wait_s"] == pytest.approx(started_at - spec.created_at)
    assert tags["tidyq.status"] == "completed" and tags["tidyq.failed"] == "3"
    assert tags["tidyq.error_types"] == "LMNotConfiguredError: 2, LMTimeoutError: 1"
    assert store.status(spec.id).error_types == {"LMNotConfiguredError": 2, "LMTimeoutError": 1}
    assert tracking.finish_job(spec.id, store.r, settings) is None  # ended once


def test_every_item_succeeded_is_finished_and_a_cancelled_job_is_killed(redis_url, settings, mlflow_uri):
    store, spec = _running_job(redis_url, 2)
    run_id = tracking.start_job(spec.id, store.r, settings)
    store.record_results(spec.id, [(_ok(0), None), (_ok(1), None)])
    assert tracking.finish_job(spec.id, store.r, settings) == run_id
    assert _run(mlflow_uri, run_id).info.status == "FINISHED"

    store, spec = _running_job(redis_url, 2)
    run_id = tracking.start_job(spec.id, store.r, settings)
    assert store.cancel(spec.id).value == "cancelling"
    assert store.chunk_end(spec.id, "0") == "cancelled"
    assert tracking.finish_job(spec.id, store.r, settings) == run_id
    run = _run(mlflow_uri, run_id)
    assert run.info.status == "KILLED" and run.data.tags["tidyq.status"] == "cancelled"


def test_run_missed_at_start_is_created_at_the_end_with_the_jobs_start_time(redis_url, settings, mlflow_uri,
                                                                            monkeypatch):
    store, spec = _running_job(redis_url, 1)
    with monkeypatch.context() as m:
        m.setattr(tracking.gate, "available", lambda s=None: False)  # tracking server away at start
        assert tracking.start_job(spec.id, store.r, settings) is None
    assert not store.r.hexists(keys.job(spec.id), "mlflow_run_claim")  # released for whoever ends the job
    store.record_results(spec.id, [(_ok(0), None)])
    run_id = tracking.finish_job(spec.id, store.r, settings)
    started_at = float(store.r.hget(keys.job(spec.id), "started_at"))
    run = _run(mlflow_uri, run_id)
    assert run.info.status == "FINISHED" and run.info.start_time == int(started_at * 1000)


def test_a_tracking_server_that_is_down_leaves_the_job_alone(redis_url, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    tracking.gate.reset()
    try:
        store, spec = _running_job(redis_url, 2)
        assert tracking.start_job(spec.id, store.r) is None
        store.record_results(spec.id, [(_ok(0), None)])
        assert tracking.finish_job(spec.id, store.r) is None  # no run to log progress to
        store.record_results(spec.id, [(_bad(1, "LMTimeoutError"), {"question": "q"})])
        assert tracking.finish_job(spec.id, store.r) is None
        assert store.status(spec.id).status.value == "completed"
        assert not store.r.hexists(keys.job(spec.id), "mlflow_run_id")
    finally:
        tracking.gate.reset()


def test_a_job_cancelled_between_chunks_ends_its_run_killed(redis_url, settings, mlflow_uri, in_process_chunks):
    """No chunk runs when the cancel lands, so the job is cancelled at once; the next chunk (skipped)
    ends the run. The chunk task runs in this process (no broker round trip)."""
    from workers.tasks import run_chunk

    store = JobStore.from_url(redis_url)
    spec = JobSpec(id=f"job{time.time_ns()}", kind=JobKind.BATCH, signature="question -> answer", backend="mock",
                   total=4, chunk_size=2, ttl_seconds=600, created_at=time.time())
    store.create_job(spec)
    chunks = [{"job": spec.model_dump(mode="json"), "chunk": n,
               "items": [{"custom_id": f"{n}-{i}", "inputs": {"question": f"q{i}"}} for i in range(2)]}
              for n in range(2)]
    assert run_chunk(chunks[0])["succeeded"] == 2
    run_id = wait_for(lambda: store.r.hget(keys.job(spec.id), "mlflow_run_id"), 30, "the run").decode()
    assert _run(mlflow_uri, run_id).info.status == "RUNNING"
    assert store.cancel(spec.id).value == "cancelled"
    assert run_chunk(chunks[1])["stopped"] == "cancelled"
    run = _run(mlflow_uri, run_id)
    assert run.info.status == "KILLED" and run.data.metrics["succeeded"] == 2


def test_warm_up_opens_the_store_in_the_background_and_is_off_without_a_uri(mlflow_uri, monkeypatch):
    thread = tracking.warm_up()
    thread.join(timeout=60)
    assert not thread.is_alive() and tracking._experiments  # the experiment id is known before any job
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", "")
    assert tracking.warm_up() is None


def test_a_run_whose_end_could_not_be_written_is_ended_by_a_later_chunk(redis_url, settings, mlflow_uri,
                                                                         monkeypatch):
    store, spec = _running_job(redis_url, 1)
    run_id = tracking.start_job(spec.id, store.r, settings)
    store.record_results(spec.id, [(_bad(0, "LMTimeoutError"), {"question": "q"})])
    with monkeypatch.context() as m:
        m.setattr(tracking.gate, "available", lambda s=None: False)  # MLflow away when the job ends
        assert tracking.finish_job(spec.id, store.r, settings) is None
    assert _run(mlflow_uri, run_id).info.status == "RUNNING"
    assert store.r.zscore(keys.mlflow_deferred_ends(), spec.id) is not None
    assert not store.r.hexists(keys.job(spec.id), "mlflow_logged")

    other, other_spec = _running_job(redis_url, 2)  # any later chunk, of any job, ends it
    tracking.finish_job(other_spec.id, other.r, settings)
    assert tracking.drain()  # on the tracking thread
    run = _run(mlflow_uri, run_id)
    assert run.info.status == "FAILED" and run.data.tags["tidyq.error_types"] == "LMTimeoutError: 1"
    assert run.info.end_time == int(float(store.r.hget(keys.job(spec.id), "finished_at")) * 1000)
    assert store.r.zscore(keys.mlflow_deferred_ends(), spec.id) is None
    assert tracking.finish_job(spec.id, store.r, settings) is None  # ended once

    store.r.zadd(keys.mlflow_deferred_ends(), {"long-gone": 1.0})  # an expired job leaves the set
    tracking.finish_job(other_spec.id, other.r, settings)
    assert tracking.drain()
    assert store.r.zscore(keys.mlflow_deferred_ends(), "long-gone") is None


def test_the_chunk_never_waits_for_the_run_to_be_created(redis_url, settings, mlflow_uri, monkeypatch):
    """start_job_soon returns at once; the run appears from this process's tracking thread."""
    import threading

    store, spec = _running_job(redis_url, 1)
    release = threading.Event()
    real = tracking.start_job_run
    monkeypatch.setattr(tracking, "start_job_run", lambda *a, **k: (release.wait(30), real(*a, **k))[1])
    future = tracking.start_job_soon(spec.id, store.r, settings)
    assert not future.done()  # a slow tracking server holds the tracking thread, not the chunk
    release.set()
    run_id = future.result(timeout=30)
    assert run_id and _run(mlflow_uri, run_id).info.status == "RUNNING"
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", "")
    assert tracking.start_job_soon(spec.id, store.r) is None


def test_a_slow_creator_that_lost_to_the_jobs_end_deletes_its_run(redis_url, settings, mlflow_uri):
    store, spec = _running_job(redis_url, 1)
    store.r.hset(keys.job(spec.id), "mlflow_run_claim", "1")
    first = tracking._create_job_run(store.r, spec.id, tracking._job_hash(store.r, spec.id), settings)
    second = tracking._create_job_run(store.r, spec.id, tracking._job_hash(store.r, spec.id), settings)
    assert second == first  # the job keeps the first run
    from mlflow import MlflowClient

    runs = MlflowClient(mlflow_uri).search_runs([tracking._experiments[(mlflow_uri, "tidyq")]])
    assert [r.info.run_id for r in runs] == [first]  # the loser's run was deleted


def test_the_jobs_end_waits_for_a_run_being_created_and_takes_over_from_a_dead_creator(redis_url, mlflow_uri,
                                                                                      monkeypatch):
    import threading

    monkeypatch.setenv("TIDYQ_MLFLOW_REQUEST_TIMEOUT", "0.5")  # the end waits at most 1.5 s for a creator
    s = get_settings()
    store, spec = _running_job(redis_url, 1)
    store.r.hset(keys.job(spec.id), "mlflow_run_claim", "1")  # another worker is creating the run ...
    job = tracking._job_hash(store.r, spec.id)
    creator = threading.Timer(0.3, lambda: tracking._create_job_run(store.r, spec.id, job, s))
    creator.start()
    store.record_results(spec.id, [(_ok(0), None)])
    run_id = tracking.finish_job(spec.id, store.r, s)  # ... and the job's end uses that run
    creator.join()
    assert run_id == store.r.hget(keys.job(spec.id), "mlflow_run_id").decode()
    assert _run(mlflow_uri, run_id).info.status == "FINISHED"

    store, spec = _running_job(redis_url, 1)
    store.r.hset(keys.job(spec.id), "mlflow_run_claim", "1")  # a creator that died holding the claim
    store.record_results(spec.id, [(_ok(0), None)])
    assert tracking.finish_job(spec.id, store.r, s) is None
    assert not store.r.hexists(keys.job(spec.id), "mlflow_run_claim")  # released after the bounded wait
    other, other_spec = _running_job(redis_url, 2)
    tracking.finish_job(other_spec.id, other.r, s)  # a later chunk anywhere creates and ends it
    assert tracking.drain()
    run_id = store.r.hget(keys.job(spec.id), "mlflow_run_id").decode()
    assert _run(mlflow_uri, run_id).info.status == "FINISHED"
