"""The Redis circuit breaker against a real redis-server: states, window, fleet-wide probes."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import redis
from dspy import lm15

from shared import keys
from shared.breaker import (
    BreakerSettings,
    CircuitBreaker,
    Permit,
    breaker_states,
    breaker_status,
    counters,
    outcome_of,
    reset_breaker,
)
from shared.errors import BreakerOpen

FAST = dict(window_seconds=5.0, buckets=5, min_calls=4, failure_rate=0.5, open_seconds=0.3, max_open_seconds=1.0,
            half_open_probes=2, close_after=1, probe_lease_seconds=5.0, busy_retry_seconds=0.2,
            local_memo_seconds=0.05)


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def make(client, target="direct:openai/a", **over) -> CircuitBreaker:
    return CircuitBreaker(client, target, BreakerSettings(**{**FAST, **over}))


def fail(b: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        b.record(b.acquire(), "fail")


def test_stays_closed_below_min_calls_and_below_rate(client):
    b = make(client)
    fail(b, 3)  # 100% failures but fewer than min_calls
    assert breaker_status(client, b.target)["state"] == "closed"
    b2 = make(client, "direct:openai/other")
    for outcome in ["ok", "ok", "ok", "fail", "ok", "fail"]:  # 2/6 < 0.5
        b2.record(b2.acquire(), outcome)
    st = breaker_status(client, b2.target, b2.settings)
    assert st["state"] == "closed" and st["window"] == {"calls": 6, "failures": 2, "failure_rate": 0.3333,
                                                         "seconds": 5.0}


def test_opens_on_failure_rate_and_rejects_until_half_open(client):
    b = make(client)
    b.record(b.acquire(), "ok")
    fail(b, 2)
    assert b.record(b.acquire(), "fail") == "open"  # 3/4 failures, min_calls 4
    with pytest.raises(BreakerOpen) as info:
        b.acquire()
    assert info.value.state == "open"
    assert 0 < info.value.retry_at - time.time() <= FAST["open_seconds"] + 0.05
    st = breaker_status(client, b.target, b.settings)
    assert st["state"] == "open" and st["transitions"] == {"closed->open": 1}


def test_half_open_probes_are_bounded_across_clients_then_success_closes(client, redis_url):
    b = make(client)
    fail(b, 4)
    time.sleep(FAST["open_seconds"] + 0.05)
    # three "processes": separate connections and breaker objects
    others = [make(redis.Redis.from_url(redis_url)) for _ in range(3)]
    permits = []
    rejected = 0
    for other in others:
        try:
            permits.append(other.acquire())
        except BreakerOpen as exc:
            assert exc.state == "half_open"
            rejected += 1
    assert len(permits) == 2 and rejected == 1 and all(p.probe_id for p in permits)
    assert breaker_status(client, b.target, b.settings)["probes_in_flight"] == 2
    assert others[0].record(permits[0], "ok") == "closed"
    assert others[1].record(permits[1], "ok") == "closed"  # a late probe of a closed breaker changes nothing
    st = breaker_status(client, b.target, b.settings)
    assert st["state"] == "closed" and st["window"]["calls"] == 0  # the old failures are forgotten
    assert st["transitions"] == {"closed->open": 1, "open->half_open": 1, "half_open->closed": 1}


def test_failed_probe_reopens_for_longer(client):
    b = make(client)
    fail(b, 4)
    time.sleep(FAST["open_seconds"] + 0.05)
    permit = b.acquire()
    assert permit.probe_id
    assert b.record(permit, "fail") == "open"
    with pytest.raises(BreakerOpen) as info:
        b.acquire()
    assert info.value.retry_at - time.time() > FAST["open_seconds"]  # doubled: 0.6 s
    assert breaker_status(client, b.target, b.settings)["transitions"]["half_open->open"] == 1


def test_neutral_probe_releases_its_slot_without_deciding(client):
    b = make(client, half_open_probes=1)
    fail(b, 4)
    time.sleep(FAST["open_seconds"] + 0.05)
    permit = b.acquire()
    with pytest.raises(BreakerOpen):
        make(client, half_open_probes=1).acquire()
    assert b.record(permit, "neutral") == "half_open"
    assert make(client, half_open_probes=1).acquire().probe_id  # the slot is free again


def test_probe_lease_of_a_dead_worker_expires(client):
    b = make(client, half_open_probes=1, probe_lease_seconds=0.2)
    fail(b, 4)
    time.sleep(FAST["open_seconds"] + 0.05)
    b.acquire()  # this "worker" dies: never records
    with pytest.raises(BreakerOpen):
        make(client, half_open_probes=1, probe_lease_seconds=0.2).acquire()
    time.sleep(0.25)
    assert make(client, half_open_probes=1, probe_lease_seconds=0.2).acquire().probe_id


def test_a_run_of_failures_opens_it_whatever_the_rate(client):
    b = make(client, consecutive_failures=5)
    for _ in range(50):
        b.record(b.acquire(), "ok")
    fail(b, 4)
    b.record(b.acquire(), "ok")  # a success breaks the run
    fail(b, 4)
    assert breaker_status(client, b.target, b.settings)["state"] == "closed"  # 8/59 failed, no run of 5
    assert b.record(b.acquire(), "fail") == "open"


def _record_calls(client) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def test_successes_of_a_closed_breaker_are_reported_in_batches(client):
    b = make(client, "direct:openai/batched", ok_batch_seconds=0.2)
    b.record(b.acquire(), "ok")  # the first report tells this process the breaker is closed
    b.record(b.acquire(), "ok")
    b.flush()  # one batch reported first: a script's first call on a fresh Redis is two EVALSHAs (NOSCRIPT)
    before = _record_calls(client)
    for _ in range(200):
        assert b.record(b.acquire(), "ok") == "closed"
    assert _record_calls(client) - before == 0  # no round trip per success
    time.sleep(0.35)  # the batch is reported when its interval has passed, with no further call needed
    assert _record_calls(client) - before == 1
    assert breaker_status(client, b.target, b.settings)["window"]["calls"] == 202


def test_closing_a_breaker_reports_its_batched_successes_at_once(client):
    b = make(client, "direct:openai/closed-early", ok_batch_seconds=30.0)
    b.record(b.acquire(), "ok")
    for _ in range(7):
        b.record(b.acquire(), "ok")
    assert breaker_status(client, b.target, b.settings)["window"]["calls"] <= 1  # the 7 still batched
    b.close()  # an engine closed (a test, a worker shutting down) holds nothing back for later
    assert breaker_status(client, b.target, b.settings)["window"]["calls"] == 8
    assert b._ok_timer is None


def test_an_acquire_that_finds_it_closed_spares_the_next_ones_their_round_trip(client):
    b = make(client, "direct:openai/acquired")
    b.acquire()  # nothing known yet: asks Redis, which says closed
    before = _record_calls(client)
    permits = [b.acquire() for _ in range(100)]  # the attempts a chunk starts at once, before any report
    assert _record_calls(client) == before and not any(p.probe_id for p in permits)


def test_rate_limit_answers_of_a_closed_breaker_ride_with_the_batch(client):
    """A 30% 429 storm reported every 429 (neutral) in a script call of its own: 97 per job, 0.2-0.5 s
    of blocked event loop. A neutral outcome counts nothing, so while this process knows the breaker is
    closed it is reported with the next batch (one call, from the batch's timer thread), which still
    renews this process's memo; once that knowledge is stale it is reported at once, as before."""
    b = make(client, "direct:openai/neutral", closed_memo_seconds=0.3, ok_batch_seconds=0.1)
    b.record(b.acquire(), "ok")  # the first report tells this process the breaker is closed
    before = _record_calls(client)
    for _ in range(50):
        assert b.record(b.acquire(), "neutral") == "closed"
    assert _record_calls(client) == before  # none on the caller's thread
    time.sleep(0.2)
    assert _record_calls(client) == before + 1  # the batch: one neutral report
    time.sleep(0.35)  # the closed memo ran out: a neutral outcome asks Redis again
    assert b.record(Permit(), "neutral") == "closed"
    assert _record_calls(client) == before + 2
    st = breaker_status(client, b.target, b.settings)
    assert st["window"]["calls"] == 1 and st["window"]["failures"] == 0


def test_a_failure_reports_the_batched_successes_before_it(client):
    b = make(client, "direct:openai/ordered", consecutive_failures=3, failure_rate=0.9, ok_batch_seconds=30.0)
    b.record(b.acquire(), "ok")
    fail(b, 2)
    b.record(b.acquire(), "ok")  # batched, but it breaks the run: the next failure reports it first
    assert b.record(b.acquire(), "fail") == "closed"
    st = breaker_status(client, b.target, b.settings)
    assert st["window"]["calls"] == 5 and st["window"]["failures"] == 3


RUN_ONLY = dict(consecutive_failures=5, failure_rate=0.99, min_calls=1000, ok_batch_seconds=0.2)  # the run rule alone


def test_failures_of_several_processes_between_their_batched_successes_are_no_run(client):
    """Six hung calls time out together in four processes while the others' calls succeed in between:
    no run of five in real time. The successes are batched (reported up to ok_batch_seconds late), so
    the failures reached Redis first and opened the breaker (the storm test's 13-15 s gap)."""
    fleet = [make(client, "direct:openai/interleaved", **RUN_ONLY) for _ in range(4)]
    for b in fleet:
        b.acquire()  # each learns the breaker is closed: its successes are batched from now on
    for i in range(6):
        fleet[i % 2].record(Permit(), "ok")  # held for the next batch
        assert fleet[2 + i % 2].record(Permit(), "fail") == "closed"
    time.sleep(0.5)  # the batches are in, and the run they broke no longer opens anything
    st = breaker_status(client, fleet[0].target, fleet[0].settings)
    assert st["state"] == "closed" and st["window"] == {**st["window"], "calls": 12, "failures": 6}


def test_a_run_of_failures_across_processes_opens_it_once_no_success_can_break_it(client):
    """A real outage seen by four processes: the run is complete at the fifth failure, and the breaker
    opens ok_batch_seconds later, when no process can hold an unreported success any more, without
    waiting for another call."""
    settings = {**RUN_ONLY, "open_seconds": 5.0, "max_open_seconds": 10.0}
    fleet = [make(client, "direct:openai/outage", **settings) for _ in range(4)]
    for b in fleet:
        b.acquire()
    states = [fleet[i % 4].record(Permit(), "fail") for i in range(5)]
    assert states == ["closed"] * 5  # other processes might still report successes from before it
    time.sleep(0.35)
    assert breaker_status(client, fleet[0].target, fleet[0].settings)["state"] == "open"
    time.sleep(fleet[1].settings.closed_memo_seconds)  # what the others knew of it expires: they ask
    with pytest.raises(BreakerOpen):
        fleet[1].acquire()


def test_sliding_window_forgets_old_failures(client):
    b = make(client, window_seconds=0.5, buckets=5)
    fail(b, 3)
    time.sleep(0.6)
    assert b.record(b.acquire(), "fail") == "closed"  # only 1 failure inside the window now
    assert breaker_status(client, b.target, b.settings)["window"]["calls"] == 1


def test_reset_closes_at_once_and_is_listed(client):
    b = make(client)
    fail(b, 4)
    assert reset_breaker(client, b.target) == {"target": b.target, "was": "open", "now": "closed"}
    time.sleep(FAST["local_memo_seconds"])
    assert b.acquire().probe_id == ""
    states = breaker_states(client, b.settings)
    assert [s["target"] for s in states] == [b.target] and states[0]["state"] == "closed"


def test_redis_down_lets_calls_through():
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    b = CircuitBreaker(dead, "direct:openai/a", BreakerSettings(**FAST))
    permit = b.acquire()
    assert permit.probe_id == "" and b.record(permit, "fail") is None


def test_outcomes():
    assert outcome_of(None) == "ok"
    assert outcome_of(lm15.ServerError("x")) == "fail"
    assert outcome_of(lm15.ServerError("x", status=503)) == "fail"  # 503 without Retry-After: an outage
    # rate limits feed backoff and the rate limiter, never the failure rate
    assert outcome_of(lm15.RateLimitError("x", status=429)) == "neutral"
    assert outcome_of(lm15.RateLimitError("x", status=429, retry_after=2.0)) == "neutral"
    assert outcome_of(lm15.ServerError("x", status=503, retry_after=1.0)) == "neutral"
    assert outcome_of(lm15.ServerError("x", status=500, retry_after=1.0)) == "fail"
    assert outcome_of(lm15.TimeoutError("x")) == "fail"
    assert outcome_of(lm15.ContextLengthError("x")) == "neutral"
    assert outcome_of(lm15.AuthError("x")) == "neutral"
    assert outcome_of(lm15.InvalidRequestError("x")) == "neutral"


def test_transition_counters_for_prometheus(client):
    counters.reset()
    b = make(client, "direct:openai/counted")
    fail(b, 4)
    snap = counters.snapshot()["transitions"]
    assert {"target": "direct:openai/counted", "from": "closed", "to": "open", "count": 1} in snap


def _grab_probes(url: str, target: str, n: int, out) -> None:
    b = CircuitBreaker(redis.Redis.from_url(url), target, BreakerSettings(**{**FAST, "half_open_probes": 3}))
    got = 0
    for _ in range(n):
        try:
            b.acquire()
            got += 1
        except BreakerOpen:
            pass
    out.put(got)


def test_probe_bound_holds_across_processes(client, redis_url):
    target = "direct:openai/fleet"
    b = make(client, target, half_open_probes=3)
    fail(b, 4)
    time.sleep(FAST["open_seconds"] + 0.05)
    # spawn, not fork: earlier tests leave threads (tracking, asyncio clients) whose locks a fork can copy held
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_grab_probes, args=(redis_url, target, 50, out)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        total = sum(out.get(timeout=60) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert total == 3  # 200 attempts from four processes, three fleet-wide probe slots
    assert client.zcard(keys.breaker_probes(target)) == 3
