"""tidyq.assertions: DSPy 2.x assertion semantics on DSPy 3.4, against the loopback OpenAI stand-in.

The module's checks fail on the first answer; the test reads the requests the stand-in received
to see what DSPy 2.x would have sent on the backtrack: the failing predictor re-run with the
assertion message as ``feedback`` and its previous answer as ``past_<field>``.
"""

from __future__ import annotations

import functools
import logging
import threading

import dspy
import pytest

import tidyq.assertions as ta


@pytest.fixture
def lm(openai_fake):
    lm = dspy.LM("openai/fake-model", api_base=openai_fake.base_url, api_key="sk-test", cache=False, num_retries=0)
    with dspy.context(lm=lm):
        yield openai_fake


def _prompts(fake) -> list[str]:
    return ["\n".join(m["content"] if isinstance(m["content"], str) else str(m["content"])
                      for m in r.body["messages"]) for r in fake.requests if isinstance(r.body, dict)]


class TwoStep(dspy.Module):
    """Two predictors; the check is on the second one's answer (the trace's last)."""

    def __init__(self, kind="suggest", passes_after=99, target=False):
        super().__init__()
        self.first = dspy.Predict("question -> topic")
        self.second = dspy.ChainOfThought("question, topic -> answer")
        self.kind, self.passes_after, self.target, self.calls = kind, passes_after, target, 0

    def forward(self, question):
        self.calls += 1
        topic = self.first(question=question).topic
        pred = self.second(question=question, topic=topic)
        check = ta.Assert if self.kind == "assert" else ta.Suggest
        extra = {"target_module": self.first if self.target == "first" else self.second} if self.target else {}
        check(self.calls > self.passes_after, f"answer must mention {question!r}", **extra)
        return pred


def test_failing_suggest_reruns_the_last_predictor_with_feedback_then_is_bypassed(lm, caplog):
    program = ta.assert_transform_module(TwoStep("suggest"), functools.partial(ta.backtrack_handler, max_backtracks=2))
    with caplog.at_level(logging.INFO, logger="shared.assertions"):
        pred = program(question="why is the sky blue")
    assert program.calls == 3  # the first try + max_backtracks
    assert pred.answer
    prompts = _prompts(lm)
    assert len(prompts) == 6  # two predictors per forward()
    retried = [p for p in prompts if "feedback" in p]
    assert len(retried) == 2 and all("answer must mention 'why is the sky blue'" in p for p in retried)
    assert all("past_answer" in p and "past_reasoning" in p for p in retried)
    assert not any("feedback" in p for p in prompts[:2])  # the first try is the plain program
    assert "topic" in retried[0] and "past_topic" not in retried[0]  # only the failing predictor is changed
    assert "SuggestionFailed" in caplog.text


@pytest.mark.parametrize("target, past, not_past", [("first", "past_topic", "past_answer"),
                                                    ("second", "past_answer", "past_topic")])
def test_target_module_names_the_predictor_to_backtrack_to(lm, target, past, not_past):
    """A Predict, or a module such as ChainOfThought whose own predictor is the one traced."""
    program = ta.activate_assertions(TwoStep("suggest", target=target), max_backtracks=1)
    program(question="q1")
    retried = [p for p in _prompts(lm) if "feedback" in p]
    assert len(retried) == 1 and past in retried[0] and not_past not in retried[0]


def test_failing_assert_raises_after_its_backtracks(lm):
    program = ta.assert_transform_module(TwoStep("assert"), ta.backtrack_handler, max_backtracks=2)
    with pytest.raises(ta.DSPyAssertionError) as raised:
        program(question="q")
    assert program.calls == 2  # 2.x: the last of the max_backtracks + 1 tries is not run for an Assert
    assert sum("feedback" in p for p in _prompts(lm)) == 1
    assert raised.value.msg == "answer must mention 'q'" and isinstance(raised.value, AssertionError)


def test_a_check_that_passes_on_the_backtrack_returns_that_prediction(lm):
    program = ta.activate_assertions(TwoStep("assert", passes_after=1))
    assert program(question="q").answer and program.calls == 2


def test_bypass_suggest_false_returns_none_after_the_backtracks(lm):
    program = ta.assert_transform_module(TwoStep("suggest"), ta.backtrack_handler, bypass_suggest=False,
                                         max_backtracks=1)
    assert program(question="q") is None


def test_outside_an_activated_module_both_raise_and_a_non_bool_is_a_value_error(lm):
    with pytest.raises(ta.DSPySuggestionError):
        TwoStep("suggest")(question="q")
    with pytest.raises(ta.DSPyAssertionError):
        TwoStep("assert")(question="q")
    with pytest.raises(ValueError, match="should always return \\[bool\\]"):
        ta.Assert("yes", "a string is not a bool")
    assert ta.Assert(True, "holds").result is True
    assert not issubclass(ta.DSPySuggestionError, ta.DSPyAssertionError)


def test_noop_and_bypass_handlers(lm):
    assert ta.assert_transform_module(TwoStep("assert"), ta.noop_handler)(question="q").answer
    assert ta.assert_transform_module(TwoStep("suggest"), ta.bypass_suggest_handler)(question="q").answer
    with pytest.raises(ta.DSPyAssertionError):
        ta.assert_transform_module(TwoStep("assert"), ta.bypass_suggest_handler)(question="q")
    assert ta.assert_transform_module(TwoStep("assert"), ta.bypass_assert_handler)(question="q").answer
    assert ta.assert_transform_module(TwoStep("assert"), ta.assert_no_except_handler)(question="q") is None
    assert len(_prompts(lm)) == 10  # each handler ran forward once: no backtracking


def test_backtracking_in_threads_keeps_each_calls_feedback_apart(lm):
    program = ta.activate_assertions(TwoStep("suggest"), max_backtracks=1)
    errors: list[BaseException] = []
    configured = dspy.settings.lm  # plain threads do not inherit dspy.context, so each sets its own

    def call(n):
        try:
            with dspy.context(lm=configured):
                program(question=f"question number {n}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for prompt in (p for p in _prompts(lm) if "feedback" in p):
        asked = prompt.split("[[ ## question ## ]]")[-1].split("[[")[0]
        number = asked.strip().rsplit(" ", 1)[-1]
        assert f"'question number {number}'" in prompt


def test_dspy_parallel_and_state_round_trip(lm, tmp_path):
    program = ta.activate_assertions(TwoStep("suggest", passes_after=1))
    results = dspy.Parallel(num_threads=2)([(program, dspy.Example(question=f"q{n}").with_inputs("question"))
                                            for n in range(3)])
    assert all(r.answer for r in results)
    program.save(str(tmp_path / "p.json"))
    fresh = TwoStep("suggest", passes_after=1)
    fresh.load(str(tmp_path / "p.json"))
    assert [name for name, _ in fresh.named_predictors()] == [name for name, _ in program.named_predictors()]


def test_a_module_without_forward_is_refused():
    with pytest.raises(ValueError, match="forward"):
        ta.assert_transform_module(object())


def test_only_the_successful_try_reaches_the_callers_trace(lm):
    program = ta.activate_assertions(TwoStep("assert", passes_after=1))
    trace: list = []
    with dspy.context(trace=trace):
        program(question="q")
    assert [type(p).__name__ for p, _, _ in trace] == ["Predict", "Predict"]  # try 2's two predictors only
    assert "feedback" not in trace[1][1]  # the trace keeps the program's own inputs, as 2.x's Retry did


def test_the_feedback_adapter_copies_and_delegates():
    import copy

    from dspy.adapters.chat_adapter import ChatAdapter

    from shared.assertions import FeedbackAdapter

    adapter = FeedbackAdapter(ChatAdapter(), target=None, feedback="be brief", past_outputs={"answer": "long"})
    clone = copy.deepcopy(adapter)
    assert clone.extra == {"past_answer": "long", "feedback": "be brief"}
    assert clone.use_json_adapter_fallback == ChatAdapter().use_json_adapter_fallback  # delegated


def test_the_feedback_reaches_an_async_call_of_the_backtracked_predictor(lm):
    import asyncio

    from dspy.adapters.chat_adapter import ChatAdapter

    from shared.assertions import FeedbackAdapter

    predictor, other = dspy.Predict("question -> answer"), dspy.Predict("question -> answer")
    with dspy.context(adapter=FeedbackAdapter(ChatAdapter(), predictor, "say less", {"answer": "too long"})):
        asyncio.run(predictor.acall(question="q"))
        asyncio.run(other.acall(question="q"))
    first, second = _prompts(lm)
    assert "say less" in first and "too long" in first and "say less" not in second


def test_a_target_module_not_in_the_trace_reruns_without_feedback_and_says_so(lm, caplog):
    class Targeted(TwoStep):
        def forward(self, question):
            self.calls += 1
            pred = self.second(question=question, topic="t")
            ta.Suggest(False, "never holds", target_module=dspy.Signature)
            return pred

    program = ta.activate_assertions(Targeted(), max_backtracks=1)
    with caplog.at_level(logging.ERROR, logger="shared.assertions"):
        assert program(question="q").answer
    assert program.calls == 2 and not any("feedback" in p for p in _prompts(lm))
    assert "Module not found in trace" in caplog.text
