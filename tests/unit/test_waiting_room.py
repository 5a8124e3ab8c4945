"""The waiting room of a target's paused retries (shared/steps/waiting_room.py), through the retry
step on both paths: real threads and a real event loop, a scripted provider call, no tidyq code
replaced. The target's share is saturated first, so every bare 429 draws the full pause (a minute,
jitter off): a retry that comes back within seconds was woken, one that did not stayed paused."""

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


def saturated_step(pause: float = PAUSE) -> RetryStep:
    step = RetryStep(RetryConfig(jitter=0.0, rate_limit_max_delay=pause, max_inline_wait=2 * pause))
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


def test_a_success_of_the_target_wakes_the_earliest_paused_retry_and_only_it():
    step = saturated_step()
    answer_b, answer_d = threading.Event(), threading.Event()
    provider = Provider({"d": [answer_d], "b": [answer_b], "a": [bare_429(), response("a")],
                         "c": [bare_429(), response("c")]})
    d, _ = in_thread(step, provider.sync_call("d"))  # in flight throughout: no pause here is idle time
    assert wait_until(lambda: provider.count("d") == 1)
    b, _ = in_thread(step, provider.sync_call("b"))
    assert wait_until(lambda: provider.count("b") == 1)
    a, got_a = in_thread(step, provider.sync_call("a"))
    assert wait_until(lambda: step.room.waiting == 1)
    c, got_c = in_thread(step, provider.sync_call("c"))  # paused after a: a's deadline is the earlier
    assert wait_until(lambda: step.room.waiting == 2)
    time.sleep(0.05)
    assert provider.count("a") == provider.count("c") == 1  # both still paused while b is in flight
    answer_b.set()  # b's answer: the provider has room, a (due first) goes now
    a.join(PROMPT)
    assert got_a and got_a[0].message.text == "a"
    # a's own answer then wakes c: every pause here ended by an answer, none sat out
    c.join(PROMPT)
    assert got_c and got_c[0].message.text == "c"
    b.join(PROMPT)
    assert [name for name, _ in provider.attempts] == ["d", "b", "a", "c", "a", "c"]
    assert step.room.woken_early == 2 and step.room.waiting == 0 and step.room.active == 1  # d
    answer_d.set()
    d.join(PROMPT)
    assert step.room.active == 0


def test_the_last_active_call_pausing_wakes_the_earliest_so_the_process_never_idles():
    step = saturated_step()
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
    refuse_c.set()  # c refused too: no call of the target is active any more, so a (due first) goes
    a.join(PROMPT)
    assert got_a and got_a[0].message.text == "a"
    c.join(PROMPT)  # and a's answer wakes c
    assert got_c and got_c[0].message.text == "c"
    assert [name for name, _ in provider.attempts] == ["c", "a", "a", "c"]
    assert step.room.woken_early == 2


def test_a_lone_call_is_not_left_paused_and_a_pause_with_a_call_in_flight_is_kept():
    step = saturated_step()
    provider = Provider({"alone": [bare_429(), bare_429(), response("alone")]})
    started = time.monotonic()
    assert step(request(), provider.sync_call("alone")).message.text == "alone"
    assert time.monotonic() - started < PROMPT  # no minute-long pause with nothing else to wait for
    # with a call in flight and no answer, the drawn pause holds (a short one here)
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


def test_async_sleepers_are_woken_by_an_answer_and_by_idleness_and_end_on_cancel():
    step = saturated_step()
    retry = AsyncRetry(step)

    async def scenario():
        answer_b, answer_d = asyncio.Event(), asyncio.Event()
        provider = Provider({"d": [answer_d], "b": [answer_b], "a": [bare_429(), response("a")],
                             "c": [bare_429(), response("c")]})
        d = asyncio.ensure_future(retry(request(), provider.async_call("d")))  # in flight: no idle time
        b = asyncio.ensure_future(retry(request(), provider.async_call("b")))
        a = asyncio.ensure_future(retry(request(), provider.async_call("a")))
        while step.room.waiting < 1:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert provider.count("a") == 1  # paused while b is in flight
        answer_b.set()
        assert (await asyncio.wait_for(a, PROMPT)).message.text == "a"  # b's answer woke it
        await b
        answer_d.set()
        await d
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
        # idleness: a lone refused coroutine is not left paused
        provider.script["a"] = [bare_429(), bare_429(), response("a")]
        assert (await asyncio.wait_for(retry(request(), provider.async_call("a")), PROMPT)).message.text == "a"

    asyncio.run(scenario())


def test_an_answer_on_a_thread_wakes_a_coroutine_paused_on_another_threads_loop():
    step = saturated_step()
    retry = AsyncRetry(step)
    answer_b, answer_d = threading.Event(), threading.Event()
    provider = Provider({"d": [answer_d], "b": [answer_b], "a": [bare_429(), response("a")]})
    for name in ("d", "b"):  # d stays in flight: only b's answer can wake a
        in_thread(step, provider.sync_call(name))
        assert wait_until(lambda name=name: provider.count(name) == 1)
    got: list = []
    loop_thread = threading.Thread(
        target=lambda: got.append(asyncio.run(retry(request(), provider.async_call("a")))), daemon=True)
    loop_thread.start()
    assert wait_until(lambda: step.room.waiting == 1)
    answer_b.set()
    loop_thread.join(PROMPT)
    assert got and got[0].message.text == "a"
    answer_d.set()
    assert wait_until(lambda: step.room.active == 0)
