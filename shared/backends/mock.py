"""Deterministic offline backend: answers every output field of any signature.

It reads the output fields and their types from the adapter's system prompt ("Your output
fields are: 1. `answer` (str)") and derives each value from a hash of the last user message
(the current inputs) and the request's seed, so the same inputs always give the same outputs,
different inputs give different ones, and a re-generation with a new seed gives a new answer.
It answers in the format the prompt asks for: ChatAdapter's field markers or a JSON object.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

from dspy.lm15 import Message, Request, Response, TextPart, Usage

FIELD_LINE = re.compile(r"^\d+\. `(?P<name>[A-Za-z_][A-Za-z0-9_]*)` \((?P<type>[^)]*(?:\)[^)]*)*?)\)", re.M)
INPUT_MARKER = re.compile(r"\[\[ ## (?P<name>\w+) ## \]\]\n(?P<value>.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", re.S)
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
         "kilo", "lima", "mike", "november", "oscar", "papa")


def output_fields(system: str) -> list[tuple[str, str]]:
    """[(name, type)] of the output section of a DSPy adapter system prompt."""
    return list(_output_fields(system))


@functools.lru_cache(maxsize=256)
def _output_fields(system: str) -> tuple[tuple[str, str], ...]:
    """Parsed once per system prompt: every item of a signature has the same one."""
    _, sep, rest = system.partition("Your output fields are:")
    if not sep:
        return (("answer", "str"),)
    section = rest.split("All interactions will be structured", 1)[0]
    found = tuple((m.group("name"), m.group("type").strip()) for m in FIELD_LINE.finditer(section))
    return found or (("answer", "str"),)


def input_values(user_text: str) -> dict[str, str]:
    return {m.group("name"): m.group("value").strip() for m in INPUT_MARKER.finditer(user_text)}


def mock_value(type_text: str, digest: bytes, inputs: dict[str, str], name: str):
    number = int.from_bytes(digest[:8], "big")
    base = type_text.split("[", 1)[0].strip().lower()
    if base == "literal":
        options = re.findall(r"'([^']*)'|\"([^\"]*)\"", type_text)
        values = [a or b for a, b in options] or ["unknown"]
        return values[number % len(values)]
    if base in ("int",):
        return number % 100
    if base in ("float",):
        return round((number % 1000) / 10, 1)
    if base in ("bool",):
        return number % 2 == 0
    if base in ("list", "tuple", "set"):
        return [WORDS[(number >> (4 * i)) % len(WORDS)] for i in range(1 + number % 3)]
    if base in ("dict",):
        return {"key": WORDS[number % len(WORDS)]}
    first = next(iter(inputs.values()), "")
    words = " ".join(WORDS[(number >> (4 * i)) % len(WORDS)] for i in range(1 + number % 6))
    return f"{name}: {words} ({first[:40]})" if first else f"{name}: {words}"


def mock_outputs(system: str, user_text: str, seed: int | None = None) -> dict:
    inputs = input_values(user_text)
    fields = _output_fields(system)
    out = {}
    for name, type_text in fields:
        digest = hashlib.sha256(f"{name}\x00{seed}\x00{user_text}".encode()).digest()
        out[name] = mock_value(type_text, digest, inputs, name)
    return out


def render(outputs: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps(outputs)
    parts = []
    for name, value in outputs.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"[[ ## {name} ## ]]\n{text}")
    parts.append("[[ ## completed ## ]]")
    return "\n\n".join(parts)


class MockBackend:
    name = "mock"
    client = "tidyq mock (offline, deterministic)"

    def __init__(self, config=None):
        self.model = (config.model if config is not None else None) or "mock"

    def complete(self, request: Request) -> Response:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(p, "text", "") for p in (request.system or ()))
        user_text = next((m.text or "" for m in reversed(request.messages) if m.role == "user"), "")
        outputs = mock_outputs(system or "", user_text, request.config.seed)
        text = render(outputs, as_json="Respond with a JSON object" in user_text)
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(text)]),
                        finish_reason="stop",
                        usage=Usage(input_tokens=(len(system or "") + len(user_text)) // 4,
                                    output_tokens=len(text) // 4))

    def close(self) -> None:
        pass
