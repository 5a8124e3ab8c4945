"""The waiting room of a target's paused retries (shared/steps/waiting_room.py), through the retry
step on both paths: real threads and a real event loop, a scripted provider call, no tidyq code
replaced. The target's share is saturated first, so every bare 429 draws the full pause (a minute,
jitter off): a retry that comes back within seconds was woken or probed, one that did not stayed
paused. Each rule's test fails with that rule taken out (and all fail on the code before the room)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from dspy import lm15

from shared.config import RetryConfig
from shared.steps.async_steps import AsyncRetry
from shared.steps.retry import RetryStep
from tests.unit.test_steps import request, response

PAUSE = 60.0  # what a bare 429 draws at a saturated share: a retry back sooner was woken
PROMPT = 10.0  # how long a test waits for a woken retry (a woken one takes milliseconds)
HOLD = 3 * PROMPT  # how long a call in flight may wait for its answer: longer than any wait of the test's


def saturated_step(pause: float = PAUSE, **config) -> RetryStep:
    step = RetryStep(RetryConfig(jitter=0.0, rate_limit_max_delay=pause, max_inline_wait=2 * pause, **config))
    for _ in range(80):  # a limit we exceed: most of the last ~32 attempts refused
        step.backoff.refused()
    assert step.backoff.ceiling == pytest.approx(pause)
    return step


def bare_429() -> lm15.RateLimitError:
    return lm15.RateLimitError("slow down", status=429)


class Provider:
    """Scripted answers per call name: each attempt takes the next outcome; an Event outcome makes
    the attempt wait for it (a call in flight) and then answer. Records (name, time) per attempt."""

    def __init__(self, script: dict[str, list]):
        self.script = {name: list(outcomes) for name, outcomes in script.items()}
        self.attempts: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def _next(self, name: str):
        with self.lock:
            self.attempts.append((name, time.monotonic()))
            return self.script[name].pop(0)

    def sync_call(self, name: str):
        def call_next(req):
            outcome = self._next(name)
            if isinstance(outcome, threading.Event):
                assert outcome.wait(HOLD)
                return response(name)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return call_next

    def async_call(self, name: str):
        async def call_next(req):
            outcome = self._next(name)
            if isinstance(outcome, asyncio.Event):
                await asyncio.wait_for(outcome.wait(), HOLD)
                return response(name)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return call_next

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for n, _ in self.attempts if n == name)


def wait_until(condition, timeout: float = PROMPT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.002)
    return condition()


def in_thread(step: RetryStep, call_next) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(step(request(), call_next)), daemon=True)
    thread.start()
    return thread, out


def test_a_call_ending_with_none_of_the_target_active_wakes_the_earliest_paused_retry():
    step = saturated_step()
    answer_b, answer_d = threading.Event(), threading.Event()
    provider = Provider({"d": [answer_d], "b": [answer_b], "a": [bare_429(), response("a")],
                         "c": [bare_429(), response("c")]})
    d, _ = in_thread(step, provider.sync_call("d"))
    assert wait_until(lambda: provider.count("d") == 1)
    b, _ = in_thread(step, provider.sync_call("b"))
    assert wait_until(lambda: provider.count("b") == 1)
    a, got_a = in_thread(step, provider.sync_call("a"))
    assert wait_until(lambda: step.room.waiting == 1)
    c, got_c = in_thread(step, provider.sync_call("c"))  # paused after a: a's deadline is the earlier
    assert wait_until(lambda: step.room.waiting == 2)
    answer_b.set()  # b's answer while d is still in flight: the pauses hold (no second call per answer)
    b.join(PROMPT)
    time.sleep(0.1)
    assert provider.count("a") == provider.count("c") == 1 and step.room.waiting == 2
    answer_d.set()  # d ends and nothing of the target is active: a (due first) goes, then c after a
    a.join(PROMPT)
    assert got_a and got_a[0].message.text == "a"
    c.join(PROMPT)
    assert got_c and got_c[0].message.text == "c"
    d.join(PROMPT)
    assert [name for name, _ in provider.attempts] == ["d", "b", "a", "c", "a", "c"]
    assert step.room.woken_early == 2 and step.room.waiting == 0 and step.room.active == 0


def test_the_last_active_call_pausing_waits_only_its_idle_probe_doubling_per_probe():
    step = saturated_step()
    base = step.config.rate_limit_base_delay
    refuse_c = threading.Event()
    provider = Provider({"c": [refuse_c, response("c")], "a": [bare_429(), response("a")]})
    in_flight = provider.sync_call("c")

    def c_call(req):  # c's first attempt is in flight until a is paused, then refused
        if provider.count("c") == 0:
            in_flight(req)
            raise bare_429()
        return in_flight(req)
    c, got_c = in_thread(step, c_call)
    assert wait_until(lambda: provider.count("c") == 1)
    a, got_a = in_thread(step, provider.sync_call("a"))
    assert wait_until(lambda: step.room.waiting == 1)
    refuse_c.set()  # c refused too, the last active call: it probes after base, not a minute
    c.join(PROMPT)
    assert got_c and got_c[0].message.text == "c"
    a.join(PROMPT)  # and c's end, leaving nothing active, wakes a
    assert got_a and got_a[0].message.text == "a"
    assert [name for name, _ in provider.attempts] == ["c", "a", "c", "a"]
    # a lone call refused again and again probes after base, 2 base, 4 base ... (its own doubling)
    provider = Provider({"alone": [bare_429()] * 4 + [response("alone")]})
    assert step(request(), provider.sync_call("alone")).message.text == "alone"
    times = [t for _, t in provider.attempts]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert all(gap >= base * 2 ** i * 0.95 for i, gap in enumerate(gaps)), gaps
    assert sum(gaps) < PROMPT


def test_a_pause_with_a_call_of_the_target_in_flight_is_kept():
    short = saturated_step(pause=0.3)
    hold = threading.Event()
    provider = Provider({"b": [hold], "a": [bare_429(), response("a")]})
    b, _ = in_thread(short, provider.sync_call("b"))
    assert wait_until(lambda: provider.count("b") == 1)
    a_started = time.monotonic()
    assert short(request(), provider.sync_call("a")).message.text == "a"
    assert time.monotonic() - a_started >= 0.29 and short.room.woken_early == 0
    hold.set()
    b.join(PROMPT)


def test_a_call_past_half_its_rate_limit_retries_sits_out_its_draw():
    """The room's early retries never use up an item's budget: past half of it, no wake and no probe."""
    step = saturated_step(pause=2.0, max_rate_limit_retries=2)
    hold = threading.Event()
    provider = Provider({"b": [hold], "a": [bare_429(), bare_429(), response("a")]})
    b, _ = in_thread(step, provider.sync_call("b"))
    assert wait_until(lambda: provider.count("b") == 1)
    a, got_a = in_thread(step, provider.sync_call("a"))
    assert wait_until(lambda: step.room.waiting == 1)
    hold.set()  # b ends, nothing else active: a's first pause (1 of 2 retries spent) ends now
    a.join(PROMPT)
    assert got_a and got_a[0].message.text == "a"
    times = [t for name, t in provider.attempts if name == "a"]
    # the second pause (2 of 2 spent) left no call active, yet was neither probed nor woken
    assert times[2] - times[1] >= 1.9 and step.room.woken_early == 1
    b.join(PROMPT)


def test_async_sleepers_are_woken_probed_and_end_on_cancel():
    step = saturated_step()
    retry = AsyncRetry(step)

    async def scenario():
        answer_b = asyncio.Event()
        provider = Provider({"b": [answer_b], "a": [bare_429(), response("a")], "c": [bare_429(), response("c")]})
        b = asyncio.ensure_future(retry(request(), provider.async_call("b")))
        a = asyncio.ensure_future(retry(request(), provider.async_call("a")))
        while step.room.waiting < 1:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert provider.count("a") == 1  # paused while b is in flight
        answer_b.set()
        await b
        assert (await asyncio.wait_for(a, PROMPT)).message.text == "a"  # b's end woke it
        # cancelling a paused coroutine ends its pause at once and leaves the room consistent
        hold = asyncio.Event()
        provider.script["b"] = [hold]
        b = asyncio.ensure_future(retry(request(), provider.async_call("b")))
        c = asyncio.ensure_future(retry(request(), provider.async_call("c")))
        while step.room.waiting < 1:
            await asyncio.sleep(0.001)
        c.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(c, PROMPT)
        assert step.room.waiting == 0 and step.room.active == 1  # b alone, still in flight
        hold.set()
        await b
        assert step.room.active == 0
        # a lone refused coroutine probes instead of sitting out its minute
        provider.script["a"] = [bare_429(), bare_429(), response("a")]
        assert (await asyncio.wait_for(retry(request(), provider.async_call("a")), PROMPT)).message.text == "a"

    asyncio.run(scenario())


def test_a_call_ending_on_a_thread_wakes_a_coroutine_paused_on_another_threads_loop():
    step = saturated_step()
    retry = AsyncRetry(step)
    answer_d = threading.Event()
    provider = Provider({"d": [answer_d], "a": [bare_429(), response("a")]})
    d, _ = in_thread(step, provider.sync_call("d"))  # in flight until a is paused
    assert wait_until(lambda: provider.count("d") == 1)
    got: list = []
    loop_thread = threading.Thread(
        target=lambda: got.append(asyncio.run(retry(request(), provider.async_call("a")))), daemon=True)
    loop_thread.start()
    assert wait_until(lambda: step.room.waiting == 1)
    answer_d.set()
    loop_thread.join(PROMPT)
    assert got and got[0].message.text == "a"
    d.join(PROMPT)
    assert step.room.active == 0
