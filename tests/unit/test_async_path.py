"""The wrapper on DSPy's async path (module.acall / dspy.asyncify, the async twins of the steps)
against the loopback OpenAI stand-in: same outputs as the sync path, one retry layer, fallbacks."""

from __future__ import annotations

import asyncio
import json

import dspy
import pydantic

from shared import BackendType, CacheConfig, RetryConfig, UnifiedConfig, UnifiedDSPyWrapper
from shared.config import Target
from shared.steps.retry import RetryStep
from shared.wrapper import has_own_aforward, parsed_signature
from tests.fakes.openai_server import OpenAIFake, expected_outputs

MODEL = "openai/gpt-4o-mini"


class TwoStep(dspy.Module):
    """A user's program with Python between two predictor calls and no async forward."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.polish = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).answer
        return self.polish(question=question, draft=draft.strip().upper())


class MyCoT(dspy.ChainOfThought):
    def forward(self, **kwargs):  # overrides forward only: the parent's aforward must not be used
        return super().forward(**kwargs)


def wrapper(fake, **extra) -> UnifiedDSPyWrapper:
    return UnifiedDSPyWrapper(UnifiedConfig(backend=BackendType.DIRECT, model=MODEL, api_base=fake.base_url,
                                            api_key="sk-test", cache=CacheConfig(enabled=False),
                                            retry=RetryConfig(base_delay=0.01, jitter=0), **extra))


def test_which_programs_run_their_own_async_forward():
    assert has_own_aforward(dspy.Predict("q -> a"))
    assert has_own_aforward(dspy.ChainOfThought("q -> a"))
    assert not has_own_aforward(MyCoT("q -> a"))
    assert not has_own_aforward(TwoStep())


def test_a_signature_string_is_parsed_once_unless_it_names_its_own_types():
    # a worker builds a module per async slot: the parse (a pydantic model) must not repeat
    assert parsed_signature("question -> answer") is parsed_signature("question -> answer")
    assert parsed_signature("q: list[str] -> a: int") is parsed_signature("q: list[str] -> a: int")
    assert parsed_signature("q -> a").fields.keys() == dspy.Signature("q -> a").fields.keys()

    def parsed_with_own_doc(label):
        class Doc(pydantic.BaseModel):  # DSPy finds a type named in the string in the caller's frames
            text: str = label

        return Doc, parsed_signature("doc: Doc -> answer")

    (first_doc, first), (second_doc, second) = parsed_with_own_doc("a"), parsed_with_own_doc("b")
    assert first.input_fields["doc"].annotation is first_doc
    assert second.input_fields["doc"].annotation is second_doc


def test_async_results_equal_the_sync_path_for_predict_and_a_users_module(openai_fake):
    w = wrapper(openai_fake)
    for program in ("question -> answer", TwoStep()):
        module = w.create_module(program)
        sync = [module.predict(question=f"q{i}?") for i in range(5)]

        async def main(program=program):
            copies = [w.create_module(program if isinstance(program, str) else TwoStep()) for _ in range(5)]
            return await asyncio.gather(*(m.apredict_with_stats(question=f"q{i}?") for i, m in enumerate(copies)))

        got = asyncio.run(main())
        assert [p.answer for p, _ in got] == [p.answer for p in sync]
        expected_calls = 1 if isinstance(program, str) else 2
        assert all(call.calls == expected_calls and call.attempts == expected_calls for _, call in got)
    second = expected_outputs({"question": "q0?", "draft": TwoStep_draft("q0?")}, ["answer"])
    assert got[0][0].answer == second["answer"]


def TwoStep_draft(question: str) -> str:  # noqa: N802 - reads as the program's first step
    return expected_outputs({"question": question}, ["answer"])["answer"].strip().upper()


def test_one_retry_layer_on_the_async_path(openai_fake):
    openai_fake.fail_next(2, 429, retry_after=0.01)
    w = wrapper(openai_fake)
    prediction, call = asyncio.run(w.create_module("question -> answer").apredict_with_stats(question="x?"))
    assert prediction.answer == expected_outputs({"question": "x?"}, ["answer"])["answer"]
    assert (call.attempts, call.retries) == (3, 2)
    assert openai_fake.request_count == 3  # no hidden retries in DSPy or lm15


def test_both_paths_feed_one_backoff_per_target(openai_fake):
    """Bare 429s (no Retry-After) on the async path and on the sync path move the same target's refusal
    share (shared/steps/target_backoff.py); successes on either path bring it down."""
    w = wrapper(openai_fake)
    module = w.create_module("question -> answer")
    backoff = next(s for s in w.routes[0].engine.steps if isinstance(s, RetryStep)).backoff
    openai_fake.fail_next(3, 429)
    _, call = asyncio.run(module.apredict_with_stats(question="x?"))
    assert (call.attempts, call.retries) == (4, 3)
    after_async = backoff.share
    assert after_async > 0
    openai_fake.fail_next(2, 429)
    module.predict(question="z?")
    assert backoff.share > after_async  # two more refusals on the sync path, one success
    share = backoff.share
    asyncio.run(module.apredict_with_stats(question="w?"))
    assert backoff.share < share


def test_fallback_target_serves_on_the_async_path(openai_fake, monkeypatch):
    with OpenAIFake() as backup:
        monkeypatch.setenv("TIDYQ_TEST_KEY_B", "sk-backup")
        monkeypatch.setenv("TIDYQ_TARGET_OPTIONS", json.dumps({"direct:openai/b": {
            "api_base": backup.base_url, "api_key_env": "TIDYQ_TEST_KEY_B"}}))
        openai_fake.set_failure_rate(1.0, [503])
        w = wrapper(openai_fake, fallbacks=(Target("direct", "openai/b"),))
        prediction, call = asyncio.run(w.create_module("question -> answer").apredict_with_stats(question="y?"))
        assert prediction.answer == expected_outputs({"question": "y?"}, ["answer"])["answer"]
        assert call.served_by == "direct:openai/b" and call.skipped[0]["target"] == f"direct:{MODEL}"
        assert backup.request_count == 1
