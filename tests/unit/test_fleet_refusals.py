"""The fleet's refusal record (shared/fleet_refusals.py) and the learned cap's cuts that follow it:
verdicts from slot counts, two processes' records summed in a real redis-server, and the cap
cutting a bare 429 at a limit but not in a random storm (dspy.lm15's RateLimitError as lm15 builds it)."""

from __future__ import annotations

import random
import socket
import time

import pytest
import redis
from dspy import lm15
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared import keys
from shared.concurrency import AdaptiveLimit
from shared.fleet_refusals import OFF_LOOP, SLOT_S, UNKNOWN, WINDOW_SLOTS, FleetRefusals, verdict_of


def random_storm(rates: list[int], share: float, seed: int = 1) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(a, sum(rng.random() < share for _ in range(a))) for a in rates]


def token_bucket(rates: list[int], per_slot: int) -> list[tuple[int, int]]:
    """A provider letting ``per_slot`` calls through per slot, refusing the rest."""
    return [(a, max(0, a - per_slot)) for a in rates]


RATES = [10, 30, 12, 40, 15, 35, 8, 25, 20, 45, 10, 30] * 2  # a fleet's attempts per slot, varying


def test_a_random_storm_is_flat_and_a_limit_rises():
    assert verdict_of(random_storm(RATES, 0.3)).kind == "flat"
    limit = verdict_of(token_bucket(RATES, 10))
    assert limit.kind == "limit" and limit.rise > 0.3


def test_no_refusals_or_no_rate_spread_says_nothing():
    assert verdict_of([(a, 0) for a in RATES]).kind == "unknown"  # nothing refused: no verdict on refusals
    steady = verdict_of(random_storm([20] * 24, 0.3))
    assert steady.kind == "unknown" and steady.attempts == 480  # no pair differs enough in rate
    assert verdict_of([]).kind == "unknown"


def test_a_storm_after_a_storm_free_spell_is_not_read_as_a_limit():
    """Pairs of neighbours: the switch from 0% to 30% is one pair, not a slope across the window."""
    quiet_then_storm = [(40, 0)] * 12 + random_storm([60, 30, 70, 35, 65, 30, 60, 28, 70, 33, 62, 31], 0.3)
    assert verdict_of(quiet_then_storm).kind != "limit"


# A 30% storm as the fleet recorded it in the storm test (tests/reliability/test_provider_storm.py),
# storm-free and storm jobs in turn: the share alone read it as a limit (rise 0.133 over spread 2.25)
RECORDED_STORM = [(0, 0)] * 7 + [(1, 0), (22, 0), (87, 0), (90, 0), (22, 0), (59, 0), (79, 0), (40, 0), (87, 34),
                                 (53, 23), (89, 24), (68, 17), (2, 1), (80, 0), (80, 0), (40, 0), (105, 36), (53, 10),
                                 (87, 29), (35, 5), (21, 0), (93, 0), (0, 0)]


def test_a_storm_whose_successes_grow_with_its_attempts_is_not_a_limit():
    assert verdict_of(RECORDED_STORM).kind != "limit"
    last_second = verdict_of(RECORDED_STORM[-10:])  # where the share alone saw the limit
    assert last_second.rise > 0.1 and last_second.kind != "limit"  # refused more when busier ...
    assert last_second.success_growth > last_second.spread ** 0.75  # ... but let more through as well
    bucket = verdict_of(token_bucket(RATES, 10))
    assert bucket.kind == "limit" and bucket.success_growth < 1.1  # a limit lets the same number through


def test_a_burst_at_the_end_of_a_quiet_window_is_a_limit():
    quiet = [(4, 0), (5, 0), (4, 0), (6, 0)] * 5
    bursts = [(4, 0), (22, 14), (5, 0), (30, 24), (6, 0), (25, 19), (4, 0), (28, 20), (5, 0), (24, 17)]
    assert verdict_of(quiet + bursts).kind == "limit"  # the last second alone shows it
    assert verdict_of(quiet + bursts[:4]).recent_share > 0.5  # two bursts: "more than half refused" at once


class WallClock:
    def __init__(self, start: float = 1_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


def feed(record: FleetRefusals, clock: WallClock, slots: list[tuple[int, int]]) -> None:
    for attempts, refused in slots:
        for i in range(attempts):
            record.record(i < refused)
        clock.now += SLOT_S


def test_two_processes_records_add_up_in_redis(redis_url):
    """Each process alone sees half the fleet's attempts; the verdict comes from their sum."""
    client = redis.Redis.from_url(redis_url)
    clock = WallClock()
    a = FleetRefusals("direct:openai/m", client, clock=clock)
    b = FleetRefusals("direct:openai/m", client, clock=clock)
    for attempts, refused in token_bucket(RATES, 10):  # the fleet at a limit: half of each slot each
        for record, share in ((a, attempts // 2), (b, attempts - attempts // 2)):
            refused_here = refused * share // max(1, attempts)
            for i in range(share):
                record.record(i < refused_here)
        clock.now += SLOT_S
    a.record(False)  # moves both on: the last slot is flushed
    b.record(False)
    assert OFF_LOOP.settle()  # the round trips run on the record's own thread
    slot = int(clock.now / SLOT_S) - 1
    stored = client.hgetall(keys.refusals("direct:openai/m"))
    assert int(stored[f"{slot}:a".encode()]) == RATES[-1]  # both processes' counts of one slot in one record
    assert 0 < client.ttl(keys.refusals("direct:openai/m")) <= 10
    for _ in range(15):  # the window moves on (30 slots): the slots that left it are deleted
        clock.now += SLOT_S
        a.record(False)
    assert OFF_LOOP.settle()
    fields = {int(f.split(b":")[0]) for f in client.hkeys(keys.refusals("direct:openai/m"))}
    assert len(fields) <= WINDOW_SLOTS + 1 and min(fields) >= int(clock.now / SLOT_S) - WINDOW_SLOTS - 1
    assert a.verdict.kind == "limit" and b.verdict.kind == "limit"


def test_a_redis_that_does_not_answer_never_holds_up_the_caller():
    """The flush's round trip runs off the caller's thread (the worker's event loop: 3-5 ms each on a
    loaded machine, 90-140 ms of a storm job): a Redis that accepts and never answers costs the caller
    nothing, and the verdict stays unknown until the round trip gives up."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    client = redis.Redis(host="127.0.0.1", port=silent.getsockname()[1], socket_timeout=0.5,
                         retry=Retry(NoBackoff(), 0))
    clock = WallClock()
    record = FleetRefusals("direct:openai/silent", client, clock=clock)
    try:
        started = time.monotonic()
        feed(record, clock, random_storm(RATES[:3], 0.3))  # two flushes, each waiting out the timeout
        assert time.monotonic() - started < 0.25
        assert record.verdict is UNKNOWN
        assert OFF_LOOP.settle(timeout=10)  # the round trips gave up meanwhile: still nothing known
        assert record.verdict is UNKNOWN
    finally:
        silent.close()


def test_a_record_without_redis_is_this_processes_own():
    clock = WallClock()
    record = FleetRefusals("direct:m", None, clock=clock)
    feed(record, clock, random_storm(RATES, 0.3))
    record.record(False)
    assert record.verdict.kind == "flat"


def refusal(retry_after=None) -> lm15.RateLimitError:
    return lm15.RateLimitError("429", retry_after=retry_after, rate_limit_headers={})


def learned_limit(slots: list[tuple[int, int]]) -> AdaptiveLimit:
    """A learned cap of 40 whose record already holds ``slots`` (and a known latency)."""
    clock = WallClock()
    limit = AdaptiveLimit("direct:m", initial=40)
    limit.refusals = FleetRefusals("direct:m", None, clock=clock)
    feed(limit.refusals, clock, slots)
    for _ in range(10):
        limit.on_success(0.03)
    limit.last_decrease = -1e9
    return limit


@pytest.mark.parametrize("storm, cut", [("random", False), ("limit", True)])
def test_a_bare_429_cuts_the_learned_cap_only_at_a_limit(storm, cut):
    slots = random_storm(RATES, 0.3) if storm == "random" else token_bucket(RATES, 10)
    limit = learned_limit(slots)
    before = limit.limit
    limit.on_throttle(refusal())
    assert (limit.limit < before) is cut, limit.refusals.verdict


def test_an_idle_target_and_a_named_wait_still_cut():
    idle = learned_limit([])
    before = idle.limit
    idle.on_throttle(refusal())  # nothing known yet: the safe side, as before the record
    assert idle.limit < before
    storm = learned_limit(random_storm(RATES, 0.3))
    before = storm.limit
    storm.on_throttle(refusal(retry_after=0.5))  # the provider says so: honoured whatever the record says
    assert storm.limit < before and storm.pause_until > 0


@pytest.mark.parametrize("opening, cut", [((22, 12), False), ((40, 30), True)])
def test_more_than_half_refused_must_be_beyond_chance(opening, cut):
    """A storm's first slot after a storm-free job: 12 of 22 refused is a 30% storm's chance (the
    stand-in's seeded storm opens with 11 of its first 20), and the cut it made took the learned cap
    from hundreds to 2-3 for the rest of the run; 30 of 40 is more than half beyond chance and cuts."""
    limit = learned_limit([(40, 0)] * 12 + [(0, 0), (0, 0), opening])
    before = limit.limit
    limit.on_throttle(refusal())
    assert (limit.limit < before) is cut, limit.refusals.verdict
