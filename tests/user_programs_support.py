"""Test support for users' own programs (tests/user_code/userprogs): where the code lives, what
the stand-in provider answers for a ReAct agent and a pydantic output, and what every item must
get back, computed from the fakes' deterministic answers (tests/fakes/answers.py) alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fakes.answers import expected_outputs, format_chat, parse_field_list, parse_sections
from tests.fakes.openai_server import openai_messages, openai_reply

USER_CODE = Path(__file__).parent / "user_code"
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima"}
QUESTION = re.compile(r"capital of (\w+), and what is (\d+) \+ (\d+)")
PERSON = re.compile(r"(\w+) is (\d+) years old")


@pytest.fixture
def user_code(monkeypatch):
    """The user's package importable here and allowed, as on the workers (worker_env below)."""
    monkeypatch.syspath_prepend(str(USER_CODE))
    monkeypatch.setenv("TIDYQ_PROGRAM_PACKAGES", "userprogs")
    from workers import runtime

    runtime.reset()
    yield USER_CODE
    runtime.reset()


def worker_env(fake, **extra: str) -> dict[str, str]:
    """A direct-backend worker on the OpenAI stand-in with the user's code on its PYTHONPATH."""
    import os

    from producers.local_worker import PROJECT_ROOT

    path = os.pathsep.join([str(PROJECT_ROOT), str(USER_CODE)])
    return {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-test", "TIDYQ_CACHE_ENABLED": "false",
            "TIDYQ_PROGRAM_PACKAGES": "userprogs", "PYTHONPATH": path, **extra}


def multihop_expected(question: str) -> dict:
    """query -> the Python search step -> notes (list) -> answer, as the fake answers each hop."""
    query = expected_outputs({"question": question}, ["query"])["query"]
    passages = [f"passage {i} for {query[:24]}" for i in range(3)]
    notes = expected_outputs({"question": question, "passages": passages}, {"notes": "list[str]"})["notes"]
    answer = expected_outputs({"question": question, "notes": notes}, ["answer"])["answer"]
    return {"query": query, "passages": passages, "notes": notes, "answer": answer}


def agent_question(i: int) -> tuple[str, str]:
    country = sorted(CAPITALS)[i % len(CAPITALS)]
    a, b = i, 2 * i + 1
    return f"What is the capital of {country}, and what is {a} + {b}?", f"{CAPITALS[country]} {a + b}"


def person_text(i: int) -> tuple[str, dict]:
    name, age = f"Person{i}", 20 + i
    return f"{name} is {age} years old", {"name": name, "age": age, "tags": [f"{age // 10 * 10}s"]}


def program_responder(request: dict) -> str:
    """Plays the LM for the agent (tool calls from the question, then the answer from the
    observations the tools returned) and the pydantic extractor; the fake's default otherwise."""
    messages = openai_messages(request)
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    outputs = parse_field_list(system, "Your output fields are:")
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    sections = parse_sections(last)
    if "next_tool_name" in outputs:
        match = QUESTION.search(sections.get("question", ""))
        steps = sum(1 for name in sections if name.startswith("observation_"))
        if match is None or steps >= 2:
            call = {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}}
        elif steps == 0:
            call = {"next_thought": "look up the capital", "next_tool_name": "lookup_capital",
                    "next_tool_args": {"country": match.group(1)}}
        else:
            call = {"next_thought": "add the numbers", "next_tool_name": "add",
                    "next_tool_args": {"a": int(match.group(2)), "b": int(match.group(3))}}
        return format_chat(call)
    if "answer" in outputs and "observation_0" in sections:
        return format_chat({"reasoning": "from the tools", "answer": f"{sections['observation_0']} "
                                                                      f"{sections.get('observation_1', '')}"})
    if "person" in outputs:
        match = PERSON.search(sections.get("text", ""))
        name, age = (match.group(1), int(match.group(2))) if match else ("nobody", 0)
        return format_chat({"person": {"name": name, "age": age, "tags": [f"{age // 10 * 10}s"]}})
    return openai_reply(request)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
