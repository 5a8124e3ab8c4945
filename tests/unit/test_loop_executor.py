"""workers/loop_executor.py: DSPy's two no-I/O hops of an adapter's call run on the loop's thread,
with the same outputs and errors; any other ``to_thread`` work still runs in a pool thread."""

from __future__ import annotations

import asyncio
import threading

import dspy
import pytest

from shared import BackendType, CacheConfig, UnifiedConfig, UnifiedDSPyWrapper
from tests.fakes.openai_server import expected_outputs
from workers.loop_executor import LoopExecutor

MODEL = "openai/gpt-4o-mini"


def wrapper(fake) -> UnifiedDSPyWrapper:
    return UnifiedDSPyWrapper(UnifiedConfig(backend=BackendType.DIRECT, model=MODEL, api_base=fake.base_url,
                                            api_key="sk-test", cache=CacheConfig(enabled=False)))


def on_loop(coro_factory, executor=None):
    loop = asyncio.new_event_loop()
    if executor is not None:
        loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(coro_factory())
    finally:
        loop.close()


def test_an_adapters_call_starts_no_thread_and_answers_the_same(openai_fake):
    w = wrapper(openai_fake)
    questions = [f"q{i}?" for i in range(6)]

    async def predict_all(counts=None):
        await w.create_module("question -> answer").apredict_with_stats(question="warm-up")  # routes the model
        before = (executor.inline, executor.threaded)
        modules = [w.create_module("question -> answer") for _ in questions]
        pairs = zip(modules, questions, strict=True)
        got = await asyncio.gather(*(m.apredict_with_stats(question=q) for m, q in pairs))
        if counts is not None:
            counts.append((executor.inline - before[0], executor.threaded - before[1]))
        return got

    executor = LoopExecutor(thread_name_prefix="test-loop")
    counts: list = []
    ours = on_loop(lambda: predict_all(counts), executor)
    assert counts == [(2 * len(questions), 0)]  # prepare and the provider-less pricing ran inline
    theirs = on_loop(predict_all)  # asyncio's own default executor
    assert [p.answer for p, _ in ours] == [p.answer for p, _ in theirs] == [
        expected_outputs({"question": q}, ["answer"])["answer"] for q in questions]
    assert [c.calls for _, c in ours] == [c.calls for _, c in theirs] == [1] * len(questions)
    executor.shutdown()


def test_other_work_still_goes_to_a_thread():
    loop_thread = []

    async def main():
        loop_thread.append(threading.get_ident())
        return await asyncio.to_thread(threading.get_ident)

    executor = LoopExecutor(thread_name_prefix="test-loop")
    assert on_loop(main, executor) != loop_thread[0]
    executor.shutdown()


def test_a_refusal_in_prepare_reaches_the_caller_as_from_a_thread(openai_fake):
    w = wrapper(openai_fake)

    async def bad_text():
        return await w.create_module("question -> answer").apredict_with_stats(question="lone \ud800 surrogate")

    errors = []
    for executor in (LoopExecutor(thread_name_prefix="test-loop"), None):
        with pytest.raises(Exception) as info:
            on_loop(bad_text, executor)
        errors.append((type(info.value), "not valid Unicode" in str(info.value)))
    assert errors[0] == errors[1] and errors[0][1]
    assert openai_fake.request_count == 0


def test_a_worker_module_keeps_no_dspy_history(openai_fake):
    w = wrapper(openai_fake)
    before = len(w.lm.history)
    quiet = w.create_module("question -> answer", keep_history=False)
    on_loop(lambda: quiet.apredict_with_stats(question="a?"))
    quiet.predict(question="b?")
    assert len(w.lm.history) == before
    kept = w.create_module("question -> answer")
    on_loop(lambda: kept.apredict_with_stats(question="c?"))
    kept.predict(question="d?")
    assert len(w.lm.history) == before + 2
    assert dspy.settings.disable_history is False  # only inside the module's own calls
