"""shared/memo_adapter.py: the memoised ChatAdapter produces exactly ChatAdapter's messages (also
on the second call, served from the memo), fires the user's adapter callbacks as often, and the
provider receives byte-identical request bodies through the wrapper."""

from __future__ import annotations

import asyncio
from typing import Literal

import dspy
import pydantic
from dspy.utils.callback import BaseCallback

from shared import BackendType, CacheConfig, UnifiedConfig, UnifiedDSPyWrapper
from shared.memo_adapter import MemoChatAdapter


class Citation(pydantic.BaseModel):
    source: str
    page: int | None = None


class Grade(dspy.Signature):
    """Grade the essay against the rubric; be strict."""

    essay: str = dspy.InputField(desc="the student's text")
    rubric: list[str] = dspy.InputField()
    grade: Literal["A", "B", "C", "F"] = dspy.OutputField()
    score: float = dspy.OutputField(desc="0 to 100")
    citations: list[Citation] = dspy.OutputField()


class Chat(dspy.Signature):
    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


CASES = [
    ("question -> answer", [{"question": "1+1?", "answer": "2"}], {"question": "What is 2+2?"}),
    ("context: list[str], question -> answer: int", [{"context": ["a"], "question": "q", "answer": 1}],
     {"context": ["x", "y"], "question": "How many?"}),
    (Grade, [{"essay": "e", "rubric": ["r"], "grade": "B", "score": 80.0, "citations": [Citation(source="s")]}],
     {"essay": "An essay.", "rubric": ["clarity", "facts"]}),
    (Chat, [], {"question": "and then?", "history": dspy.History(messages=[{"question": "hi", "answer": "hello"}])}),
    # str values (the shortcut), also for a non-str field, with JSON-looking text, surrogates, newlines
    ("a: int, b, c: list[str] -> d", [], {"a": "3", "b": '{"json": [1]}', "c": "[x, y]"}),
    ("question, context -> answer", [], {"question": "naïve ✓\nline two", "context": "\ud800 lone"}),
    ("question, context -> answer", [], {"question": "only one given"}),
    # not exactly str: DSPy's own formatting
    ("a: int, b, c: list[str] -> d", [], {"a": 3, "b": "x", "c": ["p", "q"]}),
    ("question -> answer", [], {"question": type("Text", (str,), {})("a str subclass")}),
    ("question -> answer", [], {"question": ["a", "list", "for", "a", "str", "field"]}),
]


def test_messages_equal_chat_adapters_on_the_first_call_and_from_the_memo():
    memo = MemoChatAdapter()
    for signature, demos, inputs in CASES:
        sig = dspy.ensure_signature(signature)
        expected = dspy.ChatAdapter().format(sig, demos, inputs)
        assert memo.format(sig, demos, inputs) == expected
        assert memo.format(sig, demos, inputs) == expected  # the memoised parts
        changed = sig.with_instructions("Something else entirely.")  # a new class: its own entry
        assert memo.format(changed, demos, inputs) == dspy.ChatAdapter().format(changed, demos, inputs)
        assert memo.format(changed, demos, inputs) != expected


def test_the_users_adapter_callbacks_fire_as_often_as_with_chat_adapter():
    class Count(BaseCallback):
        def __init__(self):
            self.starts = 0

        def on_adapter_format_start(self, call_id, instance, inputs):
            self.starts += 1

    sig = dspy.ensure_signature("question -> answer")
    counts = []
    for adapter in (dspy.ChatAdapter(), MemoChatAdapter()):
        counter = Count()
        with dspy.context(callbacks=[counter]):
            adapter.format(sig, [], {"question": "q"})
        counts.append(counter.starts)
    assert counts == [1, 1]


def test_the_provider_receives_the_same_requests_as_with_chat_adapter(openai_fake):
    w = UnifiedDSPyWrapper(UnifiedConfig(backend=BackendType.DIRECT, model="openai/gpt-4o-mini",
                                         api_base=openai_fake.base_url, api_key="sk-test",
                                         cache=CacheConfig(enabled=False)))
    programs = ["question -> answer", Grade, "context: list[str], question -> answer: int"]
    inputs = [{"question": "What is 2+2?"}, {"essay": "An essay.", "rubric": ["clarity"]},
              {"context": ["a", "b"], "question": "How many?"}]

    failures: list[str] = []

    def run_all() -> list:
        before = len(openai_fake.request_bodies)
        for program, row in zip(programs, inputs, strict=True):
            module = w.create_module(program)
            for use_async in (False, True):
                try:
                    if use_async:
                        asyncio.run(module.apredict_with_stats(**row))
                    else:
                        module.predict(**row)
                except Exception as exc:  # Grade's citations: the stand-in cannot answer them, so
                    failures.append(type(exc).__name__)  # ChatAdapter's JSONAdapter retry is compared too
        return openai_fake.request_bodies[before:]

    ours = run_all()  # no adapter set: the wrapper's memoised one
    with dspy.context(adapter=dspy.ChatAdapter()):  # the user's choice wins, and is DSPy's own
        theirs = run_all()
    assert len(failures) == 4 and len(ours) == len(theirs) == 2 * len(programs) + 2
    assert ours == theirs
