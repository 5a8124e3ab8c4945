"""The ledger, the sweeper, the requeue policy and rate-limit handling, against a real redis-server
(the sweeper scans real kombu messages published by a real Celery producer)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

import pytest
import redis
from dspy import lm15

from shared import keys
from shared.breaker import BreakerSettings, BreakerStep, CircuitBreaker, breaker_status
from shared.config import Settings
from shared.errors import AllTargetsOpen, BreakerOpen
from shared.jobs import ChunkPayload, Item, JobKind, JobSpec, new_job_id
from shared.ledger import ChunkLedger, chunk_task_id, parse_chunk_task_id
from shared.queues import CHUNK_TASK
from shared.steps.ratelimit import RateLimitStep
from shared.steps.retry import is_rate_limited
from shared.store import JobStore
from tests.unit.test_steps import request, response, scripted
from workers.requeue import Done, GiveUp, ProviderStillFailing, Requeue, backoff, decide, transient_cause
from workers.sweeper import Sweeper, queue_keys, task_ids_in

QUEUE = "predict.mock"


@pytest.fixture
def r(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def spec(**over) -> JobSpec:
    fields = dict(id=new_job_id(), kind=JobKind.BATCH, signature="question -> answer", backend="mock", total=4,
                  chunk_size=2, ttl_seconds=600, created_at=time.time())
    return JobSpec(**(fields | over))


def payload(job: JobSpec, chunk: int, requeues: int = 0) -> ChunkPayload:
    items = [Item(custom_id=f"{chunk}-{i}", inputs={"question": f"q{chunk}{i}"}) for i in range(2)]
    return ChunkPayload(job=job, chunk=chunk, items=items, requeues=requeues)


# --- ledger ------------------------------------------------------------------------------------

def test_task_ids_name_their_job_and_chunk():
    tid = chunk_task_id("abc123", 7)
    assert parse_chunk_task_id(tid) == ("abc123", "7")
    assert chunk_task_id("abc123", 7) != tid  # every copy has its own id
    for other in (None, "", "a-uuid-from-celery", "a.b", "a..c", "a.b.c.d"):
        assert parse_chunk_task_id(other) is None


def test_only_the_live_copy_ends_a_chunk(r):
    ledger = ChunkLedger(r)
    first = chunk_task_id("j1", 0)
    ledger.sent("j1", 0, first, QUEUE, '{"p": 1}', ttl=60, now=100.0)
    assert ledger.outstanding("j1") == 1 and ledger.jobs() == ["j1"]
    assert 0 < r.ttl(keys.job_ledger("j1")) <= 60 and 0 < r.ttl(keys.job_ledger_seen("j1")) <= 60
    second = chunk_task_id("j1", 0)  # a requeue replaces the live copy
    ledger.sent("j1", 0, second, QUEUE, '{"p": 2}', ttl=60, now=101.0)
    assert ledger.done("j1", 0, first) is False and ledger.outstanding("j1") == 1
    assert ledger.done("j1", 0, None) is False
    assert ledger.done("j1", 0, second) is True and ledger.outstanding("j1") == 0
    assert r.hlen(keys.job_ledger("j1")) == 0


def test_stale_touch_and_claim(r):
    r.hset(keys.job("j2"), mapping={"status": "running"})
    ledger = ChunkLedger(r)
    ids = {c: chunk_task_id("j2", c) for c in (0, 1)}
    for c, tid in ids.items():
        ledger.sent("j2", c, tid, QUEUE, json.dumps({"chunk": c}), ttl=60, now=100.0)
    ledger.touch([("j2", "1"), ("j2", "9")], now=200.0)  # "9" never existed: not resurrected
    assert r.zscore(keys.job_ledger_seen("j2"), "9") is None
    assert ledger.stale("j2", cutoff=150.0) == [("0", ids[0], QUEUE)]
    new = chunk_task_id("j2", 0)
    assert ledger.claim("j2", "0", "not-the-live-copy", new, cutoff=150.0, now=210.0) is None
    assert json.loads(ledger.claim("j2", "0", ids[0], new, cutoff=150.0, now=210.0)) == {"chunk": 0}
    assert ledger.claim("j2", "0", new, chunk_task_id("j2", 0), cutoff=150.0, now=220.0) is None  # seen at 210
    assert int(r.hget(keys.job("j2"), "chunk_resends")) == 1
    ledger.forget("j2")
    assert ledger.jobs() == [] and not r.exists(keys.job_ledger("j2"), keys.job_ledger_seen("j2"))


# --- sweeper -----------------------------------------------------------------------------------

def settings(**over) -> Settings:
    return Settings(**({"ledger_lease_seconds": 5.0, "sweep_interval": 1.0} | over))


@pytest.fixture
def producer(redis_url):
    from workers.celery_app import make_app

    app = make_app(redis_url, with_tasks=False)
    yield app
    app.close()


def publish(app, store: JobStore, job: JobSpec, chunk: int, now: float) -> str:
    """Publish a chunk exactly as the client does (ledger first, then a real kombu message)."""
    body = payload(job, chunk).model_dump(mode="json")
    tid = chunk_task_id(job.id, chunk)
    ChunkLedger(store.r).sent(job.id, chunk, tid, QUEUE, json.dumps(body), job.ttl_seconds, now=now)
    app.send_task(CHUNK_TASK, args=[body], queue=QUEUE, task_id=tid)
    return tid


def test_sweeper_resends_only_what_the_broker_lost_on_the_second_sweep(r, producer):
    store = JobStore(r)
    job = spec()
    store.create_job(job)
    t0 = time.time() - 60  # sent a minute ago: every chunk is past its lease
    queued, lost, held = (publish(producer, store, job, c, t0) for c in range(3))
    raw = {tid: m for m in r.lrange(QUEUE, 0, -1) for tid in task_ids_in([m])}
    assert set(raw) == {queued, lost, held}
    r.lrem(QUEUE, 1, raw[lost])  # lost between BRPOP and the unacked bookkeeping
    r.lrem(QUEUE, 1, raw[held])  # ... this one a worker holds (kombu's unacked hash)
    r.hset("unacked", "tag-1", json.dumps([json.loads(raw[held]), "", QUEUE]))
    sent: list[tuple[dict, str, str]] = []
    sweeper = Sweeper(r, lambda p, q, t: sent.append((p, q, t)), settings(), "node-a")
    first = sweeper.sweep()
    assert first == {"jobs": 1, "stale": 3, "resent": 0} and sent == []  # a suspect on one sweep only
    # the found ones were marked alive: not scanned again for a lease
    assert {c for c, *_ in ChunkLedger(r).stale(job.id, time.time() - 5)} == {"1"}
    second = sweeper.sweep()
    assert second["resent"] == 1
    [(body, queue, new_id)] = sent
    assert queue == QUEUE and body["chunk"] == 1 and parse_chunk_task_id(new_id) == (job.id, "1")
    assert ChunkPayload.model_validate(body) == payload(job, 1)
    assert store.status(job.id).chunk_resends == 1
    assert sweeper.sweep()["resent"] == 0  # the new copy is fresh


def test_one_sweeper_at_a_time_and_finished_jobs_are_dropped(r):
    store = JobStore(r)
    job = spec()
    store.create_job(job)
    ChunkLedger(r).sent(job.id, 0, chunk_task_id(job.id, 0), QUEUE, "{}", 60, now=time.time() - 60)
    a = Sweeper(r, lambda *a: None, settings(), "node-a")
    b = Sweeper(r, lambda *a: None, settings(), "node-b")
    assert a.sweep()["jobs"] == 1
    assert b.sweep() == {"jobs": 0, "stale": 0, "resent": 0}  # node-a holds the lock
    assert 0 < r.ttl(keys.sweeper_lock()) <= 3
    r.hset(keys.job(job.id), "status", "cancelling")  # still has chunks to stop: kept
    a.sweep()
    assert ChunkLedger(r).jobs() == [job.id]
    r.hset(keys.job(job.id), "status", "completed")
    a.sweep()
    assert ChunkLedger(r).jobs() == [] and not r.exists(keys.job_ledger(job.id))
    r.delete(keys.sweeper_lock())
    assert b.holds_lock()


def test_queue_keys_cover_kombus_priority_lists():
    assert queue_keys("q") == ["q", "q\x06\x163", "q\x06\x166", "q\x06\x169"]
    assert task_ids_in([b'{"headers": {"id": "a.1.x"}, "properties": {"correlation_id": "a.1.x"}}', "junk"]) \
        == {"a.1.x"}


# --- requeue policy ----------------------------------------------------------------------------

@dataclass
class Outcome:
    requeue: list = field(default_factory=list)
    requeue_delay: float = 0.0
    requeue_reason: str = "RetryLater"
    waiting_for_backend: AllTargetsOpen | None = None
    backoff: bool = False


def test_decide_done_and_give_up_at_max_requeues():
    job = spec()
    s = settings(max_requeues=2)
    assert decide(Outcome(), payload(job, 0), s) == Done()
    chunk = payload(job, 0, requeues=2)
    assert decide(Outcome(requeue=chunk.items, requeue_reason="boom"), chunk, s) == GiveUp(chunk.items, "boom")


def test_decide_backs_off_a_still_failing_provider_exponentially_within_the_cap():
    job = spec()
    s = settings(requeue_backoff_seconds=5.0, max_requeue_delay=60.0)
    delays = []
    for n in range(6):
        chunk = payload(job, 0, requeues=n)
        d = decide(Outcome(requeue=chunk.items, backoff=True), chunk, s, rng=random.Random(n))
        assert isinstance(d, Requeue) and d.counted
        delays.append(d.delay)
    for n, d in enumerate(delays):
        assert 0.8 * min(60, 5 * 2 ** n) <= d <= min(60, 1.2 * 5 * 2 ** n)
    # a wait the provider asked for wins over a shorter backoff; no backoff: exactly the wait asked
    chunk = payload(job, 0)
    assert decide(Outcome(requeue=chunk.items, requeue_delay=30, backoff=True), chunk, s).delay == 30
    assert decide(Outcome(requeue=chunk.items, requeue_delay=1.5), chunk, s).delay == 1.5
    assert 4 <= backoff(0, s) <= 6


def test_decide_respects_the_job_deadline():
    now = time.time()
    job = spec(deadline=now + 10)
    chunk = payload(job, 0)
    late = decide(Outcome(requeue=chunk.items, requeue_delay=30), chunk, settings(), now=now)
    assert isinstance(late, GiveUp) and "deadline" in late.reason
    wait = AllTargetsOpen(now + 3, [{"target": "direct:a", "reason": "breaker_open"}], now=now)
    d = decide(Outcome(requeue=chunk.items, waiting_for_backend=wait), chunk, settings(), now=now)
    assert isinstance(d, Requeue) and not d.counted and d.waiting is wait and d.delay == pytest.approx(3)
    wait = AllTargetsOpen(now + 30, [{"target": "direct:a", "reason": "breaker_open"}], now=now)
    assert isinstance(decide(Outcome(requeue=chunk.items, waiting_for_backend=wait), chunk, settings(), now=now),
                      GiveUp)


def test_transient_cause_looks_through_wrapping():
    inner = lm15.ServerError("upstream 502", status=502)
    try:
        try:
            raise inner
        except lm15.ServerError as exc:
            raise RuntimeError("wrapped by DSPy") from exc
    except RuntimeError as wrapped:
        assert transient_cause(wrapped) is inner
        assert "ServerError" in str(ProviderStillFailing(inner))
    from dspy.utils.exceptions import LMAuthError, LMServerError

    dspy_side = LMServerError("upstream 503", status=503)  # what DSPy raises outside the engine
    assert transient_cause(dspy_side) is dspy_side
    assert transient_cause(LMAuthError("bad key", status=401)) is None
    assert transient_cause(lm15.AuthError("no")) is None
    assert transient_cause(ValueError("ours")) is None
    assert transient_cause(None) is None


# --- rate limits are not failures --------------------------------------------------------------

def test_rate_limit_answers_do_not_open_the_breaker_but_outages_do(r):
    step = BreakerStep(CircuitBreaker(r, "direct:openai/rl", BreakerSettings(min_calls=4, failure_rate=0.5)))
    for exc in [lm15.RateLimitError("slow down", status=429)] * 10 + \
               [lm15.ServerError("busy", status=503, retry_after=1.0)] * 10:
        call_next, _ = scripted(exc)
        with pytest.raises(type(exc)):
            step(request(), call_next)
    st = breaker_status(r, "direct:openai/rl")
    assert st["state"] == "closed" and st["window"]["calls"] == 0
    call_next, _ = scripted(lm15.ServerError("down", status=503))
    for _ in range(6):
        with pytest.raises((lm15.ServerError, BreakerOpen)):
            step(request(), call_next)
    assert breaker_status(r, "direct:openai/rl")["state"] == "open"
    assert is_rate_limited(lm15.RateLimitError("x")) and not is_rate_limited(lm15.ServerError("x", status=503))


def test_a_rate_limit_answer_drops_the_limiters_burst(redis_url):
    slept: list[float] = []
    step = RateLimitStep("direct", redis_url, rpm=600, max_inline_wait=5, sleep=slept.append)  # 10/s, burst 10
    call_next, _ = scripted(response())
    step(request(), call_next)
    assert slept == []  # a full bucket: no wait
    limited, _ = scripted(lm15.RateLimitError("slow down", status=429))
    with pytest.raises(lm15.RateLimitError) as err:
        step(request(), limited)
    assert getattr(err.value, "tidyq_paced_by_limiter", False)  # the retry step waits for the limiter
    step(request(), call_next)  # the burst is gone: this call waits for the refill
    assert slept and slept[-1] > 0.05


def test_rate_limit_answers_have_their_own_budget_and_a_paced_one_does_not_sleep():
    from shared.config import RetryConfig
    from shared.steps.retry import PACED, RetryStep

    paced = lm15.RateLimitError("slow down", status=429)
    setattr(paced, PACED, True)
    slept: list[float] = []
    step = RetryStep(RetryConfig(max_retries=1, max_rate_limit_retries=5, base_delay=1, jitter=0), sleep=slept.append)
    call_next, calls = scripted(*([paced] * 5), response())
    step(request(), call_next)  # 5 rate-limit answers: within their budget although max_retries is 1
    assert len(calls) == 6 and slept == [0.0] * 5  # the limiter paces them, no backoff of ours
    unpaced = lm15.RateLimitError("slow down", status=429)
    slept.clear()
    call_next, calls = scripted(unpaced, unpaced, response())
    step(request(), call_next)
    # no limiter on the backend: the target's pause (not base_delay's 1 s), none while few are refused
    assert slept == [0.0, 0.0]
    call_next, calls = scripted(*([paced] * 6), response())
    with pytest.raises(lm15.RateLimitError):
        step(request(), call_next)
    assert len(calls) == 6
    hinted = lm15.ServerError("busy", status=503, retry_after=0.5)
    failure = lm15.ServerError("broken", status=500)
    slept.clear()
    call_next, calls = scripted(hinted, failure, hinted, failure)
    with pytest.raises(lm15.ServerError):
        step(request(), call_next)  # two failures exceed max_retries=1; the 503s with Retry-After do not count
    assert len(calls) == 4 and slept == [0.5, 1.0, 0.5]


# --- MLflow store set-up -----------------------------------------------------------------------

def test_store_set_up_runs_once_per_database_and_retries_only_the_known_race(tmp_path):
    from shared import mlflow_store

    mlflow_store.forget()
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    calls: list[int] = []
    slept: list[float] = []

    def racing():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) duplicate column name: step")

    mlflow_store.ensure_store(uri, racing, sleep=slept.append)
    assert len(calls) == 3 and slept == [0.2, 0.4]
    mlflow_store.ensure_store(uri, racing, sleep=slept.append)  # once per process
    assert len(calls) == 3
    mlflow_store.ensure_store("http://127.0.0.1:5000", racing)  # a server sets up its own store
    mlflow_store.ensure_store(None, racing)
    assert len(calls) == 3

    def broken():
        raise PermissionError("unable to open database file")

    with pytest.raises(PermissionError):
        mlflow_store.ensure_store(f"sqlite:///{tmp_path / 'b.db'}", broken, sleep=slept.append)

    def always_racing():
        raise RuntimeError("table experiments already exists")

    with pytest.raises(RuntimeError):
        mlflow_store.ensure_store(f"sqlite:///{tmp_path / 'c.db'}", always_racing, sleep=lambda s: None)
    assert mlflow_store.is_database_uri("postgresql+psycopg2://h/db") and not mlflow_store.is_database_uri("file:/x")
    assert mlflow_store.init_lock_path(uri).endswith(hashlib_md5(uri))
    mlflow_store.forget()


def hashlib_md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
