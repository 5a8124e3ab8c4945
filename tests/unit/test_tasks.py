"""The chunk task (workers/tasks.py `run_chunk`) in this process, on real parts: redis-server
(job store, breakers, the broker the task re-enqueues to) and the OpenAI wire-format stand-in.
Each test drives one outcome a worker must record: done, poison, given up, requeued with a
countdown, waiting for a backend, Redis away. The same paths through real worker processes are
in tests/integration/ and tests/reliability/."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import redis
from celery.exceptions import Reject

from shared.errors import ChunkItemsFailed
from shared.jobs import Item, JobKind, JobSpec, JobState, new_job_id
from workers import metrics_publisher, runtime, tasks

SIGNATURE = "question -> answer"


@pytest.fixture
def worker_env(redis_url, monkeypatch):
    """This process as a worker on the test's Redis: fresh per-process caches, the app's broker there."""
    monkeypatch.setattr(tasks, "_stores", {})
    monkeypatch.setattr(metrics_publisher, "_publishers", {})  # per-item metrics go to this Redis too
    monkeypatch.setattr(metrics_publisher, "_clients", {})
    monkeypatch.setitem(tasks.app.conf, "broker_url", redis_url)
    monkeypatch.setenv("TIDYQ_CACHE_ENABLED", "false")
    runtime.reset()
    yield redis.Redis.from_url(redis_url)
    runtime.reset()
    for publisher in metrics_publisher._publishers.values():
        publisher.stop()


def chunk(store, items: int = 2, *, backend: str = "mock", requeues: int = 0, deadline: float | None = None) -> dict:
    """A job in the store and the payload of its first chunk, as a producer sends it."""
    spec = JobSpec(id=new_job_id(), kind=JobKind.BATCH, signature=SIGNATURE, backend=backend,
                   model="openai/gpt-4o-mini" if backend == "direct" else None, total=items, chunk_size=items,
                   ttl_seconds=600, created_at=time.time(), deadline=deadline)
    store.create_job(spec)
    rows = [Item(custom_id=str(i), inputs={"question": f"q{i}"}).model_dump() for i in range(items)]
    return {"job": spec.model_dump(mode="json"), "chunk": 0, "items": rows, "requeues": requeues}


def queued_chunks(r: redis.Redis, queue: str) -> list[dict]:
    """The chunk payloads waiting in a queue (kombu's JSON envelope, base64 body)."""
    out = []
    for raw in r.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        out.append({"countdown_eta": envelope["headers"].get("eta"), **args[0]})
    return out


@pytest.fixture
def provider_asks_to_wait(openai_fake, monkeypatch):
    """Every call answers 429 with a Retry-After far above what a worker sleeps inline."""
    monkeypatch.setenv("TIDYQ_API_BASE", openai_fake.base_url)
    monkeypatch.setenv("TIDYQ_API_KEY", "sk-test-tasks-0001")
    openai_fake.set_failure_rate(1.0, [429], retry_after=120)
    return openai_fake


def test_a_chunk_runs_records_every_item_and_completes_the_job(worker_env):
    store = tasks.job_store()
    payload = chunk(store, 3)
    job_id = payload["job"]["id"]
    assert tasks.run_chunk(payload) == {"job": job_id, "chunk": 0, "items": 3, "succeeded": 3, "failed": 0,
                                        "recorded": 3}  # what Flower shows as the task's result
    status = store.status(payload["job"]["id"])
    assert status.status is JobState.COMPLETED and status.counts.succeeded == 3


def test_a_malformed_message_of_a_known_job_fails_its_items_instead_of_crashing(worker_env):
    store = tasks.job_store()
    payload = chunk(store, 2)
    payload["chunk"] = -1  # not a valid chunk number
    with pytest.raises(ChunkItemsFailed) as failed:  # Flower lists the chunk as FAILURE, with its counts
        tasks.run_chunk(payload)
    assert failed.value.summary["recorded"] == 2 and failed.value.summary["error_types"] == {"BadInput": 2}
    rows = list(store.iter_results(payload["job"]["id"], follow=False))
    assert {r["error"]["type"] for r in rows} == {"BadInput"}
    assert "malformed chunk message" in rows[0]["error"]["message"]
    assert tasks.run_chunk({"job": {"id": "no-such-job"}, "items": []})["recorded"] == 0


def test_items_the_provider_keeps_deferring_go_back_to_the_queue_with_a_countdown(worker_env, provider_asks_to_wait,
                                                                                   monkeypatch):
    monkeypatch.setenv("TIDYQ_BREAKER_ENABLED", "false")
    store = tasks.job_store()
    payload = chunk(store, 2, backend="direct")
    summary = tasks.run_chunk(payload)
    assert (summary["recorded"], summary["requeued"], summary["failed"]) == (0, 2, 0)
    (requeued,) = queued_chunks(worker_env, "predict.direct")
    assert requeued["requeues"] == 1 and sorted(i["custom_id"] for i in requeued["items"]) == ["0", "1"]
    assert requeued["countdown_eta"] is not None  # held back, not retried at once
    assert store.state(payload["job"]["id"]) is JobState.RUNNING


def test_after_the_last_allowed_requeue_the_items_fail_with_the_reason(worker_env, provider_asks_to_wait, monkeypatch):
    monkeypatch.setenv("TIDYQ_BREAKER_ENABLED", "false")
    monkeypatch.setenv("TIDYQ_MAX_REQUEUES", "2")
    store = tasks.job_store()
    payload = chunk(store, 2, backend="direct", requeues=2)
    with pytest.raises(ChunkItemsFailed):
        tasks.run_chunk(payload)
    assert queued_chunks(worker_env, "predict.direct") == []
    status = store.status(payload["job"]["id"])
    assert status.status is JobState.COMPLETED and status.counts.failed == 2
    rows = list(store.iter_results(payload["job"]["id"], follow=False))
    assert {r["error"]["type"] for r in rows} == {"RetryLater"}


def test_when_every_target_is_unavailable_the_chunk_waits_for_the_backend(worker_env, provider_asks_to_wait):
    store = tasks.job_store()
    payload = chunk(store, 2, backend="direct", deadline=time.time() + 3600)
    tasks.run_chunk(payload)
    (requeued,) = queued_chunks(worker_env, "predict.direct")
    assert requeued["requeues"] == 0  # waiting for a backend does not use up the requeue budget
    waiting = store.status(payload["job"]["id"]).waiting_for_backend
    assert waiting is not None and waiting["targets"] == ["direct:openai/gpt-4o-mini"]


def test_a_backend_that_stays_away_past_the_job_deadline_fails_the_items(worker_env, provider_asks_to_wait):
    store = tasks.job_store()
    payload = chunk(store, 2, backend="direct", deadline=time.time() + 1)  # the provider asks for 120 s
    with pytest.raises(ChunkItemsFailed):
        tasks.run_chunk(payload)
    assert queued_chunks(worker_env, "predict.direct") == []
    rows = list(store.iter_results(payload["job"]["id"], follow=False))
    assert len(rows) == 2 and all("deadline" in r["error"]["message"] for r in rows)


def test_redis_out_of_reach_hands_the_message_back_instead_of_failing_items(worker_env, monkeypatch):
    payload = chunk(tasks.job_store(), 2)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TIDYQ_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setattr(tasks, "_stores", {})
    with pytest.raises(Reject) as info:
        tasks.run_chunk(payload)
    assert info.value.requeue is True


def test_a_chunk_ends_with_its_last_results_in_three_script_calls(worker_env, monkeypatch):
    """start (with the stored ids), the first 25 results, the last 25 with the chunk's end (ledger
    entry and running set): no separate chunk_end or ledger call."""
    from shared import keys
    from shared.ledger import ChunkLedger, chunk_task_id

    monkeypatch.setenv("TIDYQ_RESULTS_FLUSH_INTERVAL", "600")  # flushes by count only: the calls are exact
    store = tasks.job_store()
    payload = chunk(store, 50)
    job_id, task_id = payload["job"]["id"], chunk_task_id(payload["job"]["id"], 0)
    ChunkLedger(store.r).sent(job_id, 0, task_id, "predict.mock", json.dumps(payload), 600)
    tasks.run_chunk.apply(args=[payload], task_id=task_id).get()  # warm: scripts loaded, wrapper built
    payload = chunk(store, 50)
    job_id, task_id = payload["job"]["id"], chunk_task_id(payload["job"]["id"], 0)
    ChunkLedger(store.r).sent(job_id, 0, task_id, "predict.mock", json.dumps(payload), 600)
    time.sleep(0.3)  # a breaker's batched successes (the warm run's, an earlier test's) report 0.2 s later
    store.r.config_resetstat()
    assert tasks.run_chunk.apply(args=[payload], task_id=task_id).get()["recorded"] == 50
    assert int(store.r.info("commandstats")["cmdstat_evalsha"]["calls"]) == 3
    assert store.status(job_id).status is JobState.COMPLETED
    assert ChunkLedger(store.r).outstanding(job_id) == 0 and store.r.scard(keys.job_running_chunks(job_id)) == 0
