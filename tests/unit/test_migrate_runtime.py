"""RefineAssertions: what migrated DSPy 2.6 assertion code runs on, against the mock backend."""

import logging

import dspy
import pytest

from shared import UnifiedConfig, UnifiedDSPyWrapper
from shared.migrate.runtime import DSPyAssertionError, DSPySuggestionError, RefineAssertions, reward_from_checks


@pytest.fixture
def lm(monkeypatch):
    monkeypatch.setenv("TIDYQ_CACHE_ENABLED", "false")
    wrapper = UnifiedDSPyWrapper(UnifiedConfig(backend="mock"))
    with dspy.context(lm=wrapper.lm):
        yield wrapper.lm


class Calls(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")
        self.calls = 0

    def forward(self, question):
        self.calls += 1
        return self.gen(question=question)


def checks_from(*rules):
    def checks(args, pred):
        for kind, test in rules:
            yield kind, test(args, pred), f"{kind} failed"
    return checks


def test_passing_checks_cost_no_extra_call(lm):
    module = Calls()
    pred = RefineAssertions(module, checks_from(("assert", lambda a, p: bool(p.answer))), attempts=3)(question="q")
    assert pred.answer and module.calls == 1


def test_failing_assert_regenerates_then_raises(lm):
    module = Calls()
    program = RefineAssertions(module, checks_from(("assert", lambda a, p: "zulu" in p.answer)), attempts=3)
    with pytest.raises(DSPyAssertionError, match="assert failed") as info:
        program(question="q")
    assert isinstance(info.value, AssertionError) and info.value.attempts == 3


def test_regeneration_returns_an_attempt_that_passes(lm):
    first = dspy.Predict("question -> answer")(question="pick")  # the mock is deterministic per seed
    checks = checks_from(("assert", lambda a, p: p.answer != first.answer))
    pred = RefineAssertions(dspy.Predict("question -> answer"), checks, attempts=3, strategy="best_of_n")(
        question="pick")
    assert pred.answer != first.answer


def test_soft_failure_is_logged_or_raised_when_strict(lm, caplog):
    checks = checks_from(("suggest", lambda a, p: False))
    with caplog.at_level(logging.WARNING):
        assert RefineAssertions(Calls(), checks, attempts=2)(question="q").answer
    assert "suggest failed" in caplog.text
    with pytest.raises(DSPySuggestionError):
        RefineAssertions(Calls(), checks, attempts=1, strict=True)(question="q")


def test_positional_inputs_reach_the_checks(lm):
    seen = {}

    def checks(args, pred):
        seen.update(args)
        yield "assert", True, ""

    RefineAssertions(Calls(), checks)("positional question")
    assert seen == {"question": "positional question"}


def test_reward_orders_hard_below_soft_below_pass():
    reward = reward_from_checks(lambda a, p: iter([("suggest", p["s"], "s"), ("assert", p["h"], "h")]))
    assert reward({}, {"s": True, "h": True}) == 1.0
    assert 0.5 <= reward({}, {"s": False, "h": True}) < 1.0
    assert reward({}, {"s": True, "h": False}) == 0.0
