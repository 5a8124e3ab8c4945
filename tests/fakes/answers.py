"""Deterministic answers for the stand-in LLM providers.

The fakes read the prompt DSPy's ChatAdapter/JSONAdapter wrote (system message "Your output
fields are: 1. `answer` (str): ...", user message "[[ ## question ## ]]\\n...") and answer every
output field with a value derived from the item's inputs alone. So a test can compute, with
``expected_outputs(inputs, outputs)``, exactly what each item must get back, and a result that
landed on the wrong item is caught. Stdlib only: the fakes also run as light subprocesses.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

_OUTPUT_HEADER = "Your output fields are:"
_INPUT_HEADER = "Your input fields are:"
_FIELD_LINE = re.compile(r"^\d+\. `(?P<name>[^`]+)` \(")
_SECTION = re.compile(r"^\[\[ ## (?P<name>\w+) ## \]\]\s*$")
JSON_REQUEST_MARKER = "Respond with a JSON object"
_ECHO_WORDS = 6
_ECHO_CHARS = 40


# --------------------------------------------------------------------------------------------
# What a test calls
# --------------------------------------------------------------------------------------------

def expected_outputs(inputs: Mapping[str, Any], outputs: Mapping[str, Any] | Iterable[str]) -> dict[str, Any]:
    """The values the fakes answer for these DSPy inputs.

    ``outputs`` maps output field name -> type (a Python type such as ``float``, or DSPy's
    annotation name such as ``"list[str]"``); a plain list of names means all ``str``.
    Input values are rendered the way DSPy renders them (str as is, dict/list as JSON);
    str outputs read "<field> <8 hex>: <first words of the alphabetically first input>".
    """
    if not isinstance(outputs, Mapping):
        outputs = {name: "str" for name in outputs}
    canonical = {k: render_input(v) for k, v in inputs.items()}
    return {name: field_value(name, annotation_name(t), canonical) for name, t in outputs.items()}


def expected_text(prompt: str) -> str:
    """The plain-text answer for a request that is not a DSPy prompt (one user message)."""
    return plain_answer({"prompt": prompt.strip()})


def render_input(value: Any) -> str:
    """Mirror dspy.adapters.utils.format_field_value for the common input types."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def annotation_name(t: Any) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "")


# --------------------------------------------------------------------------------------------
# What the servers call
# --------------------------------------------------------------------------------------------

def reply_for_messages(messages: list[dict[str, str]], *, json_mode: bool | None = None) -> str:
    """The assistant text for chat ``messages`` ([{role, content: str}]), DSPy-aware."""
    system = "\n".join(m["content"] for m in messages if m.get("role") == "system")
    users = [m["content"] for m in messages if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    output_fields = parse_field_list(system, _OUTPUT_HEADER)
    if not output_fields:
        return plain_answer({"prompt": last_user.strip()})
    input_names = set(parse_field_list(system, _INPUT_HEADER))
    inputs = parse_sections(last_user, keep=lambda name: name not in output_fields and
                            (not input_names or name in input_names))
    values = {name: field_value(name, ann, inputs) for name, ann in output_fields.items()}
    if json_mode is None:
        json_mode = JSON_REQUEST_MARKER in last_user
    return format_json(values) if json_mode else format_chat(values)


def format_chat(values: Mapping[str, Any]) -> str:
    """ChatAdapter's wire format: one [[ ## field ## ]] section each, then the completed marker."""
    parts = [f"[[ ## {name} ## ]]\n{v if isinstance(v, str) else json.dumps(v)}" for name, v in values.items()]
    parts.append("[[ ## completed ## ]]")
    return "\n\n".join(parts)


def format_json(values: Mapping[str, Any]) -> str:
    return json.dumps(dict(values), ensure_ascii=False)


def parse_field_list(system: str, header: str) -> dict[str, str]:
    """{name: annotation name} from DSPy's "Your output fields are:\\n1. `x` (str): ..." block."""
    start = system.find(header)
    if start < 0:
        return {}
    fields: dict[str, str] = {}
    for line in system[start + len(header):].splitlines():
        if line.startswith(("Your input fields are:", "Your output fields are:", "All interactions")):
            break
        match = _FIELD_LINE.match(line)
        if match:
            fields[match.group("name")] = _balanced(line, match.end())
    return fields


def parse_sections(text: str, keep=lambda name: True) -> dict[str, str]:
    """{name: value} of the [[ ## name ## ]] sections in a user message."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _SECTION.match(line.strip())
        if match:
            current = match.group("name")
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
    out = {name: "\n".join(lines).strip() for name, lines in sections.items() if keep(name)}
    # The output-requirements reminder DSPy appends after the last input is not part of it.
    for name, value in out.items():
        cut = value.find("Respond with ")
        if cut >= 0 and ("[[ ## completed ## ]]" in value[cut:] or JSON_REQUEST_MARKER in value[cut:]):
            out[name] = value[:cut].strip()
    return out


# --------------------------------------------------------------------------------------------
# Value derivation
# --------------------------------------------------------------------------------------------

def _digest(inputs: Mapping[str, str], salt: str) -> str:
    blob = json.dumps(dict(sorted(inputs.items())), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(f"{blob}\x00{salt}".encode()).hexdigest()


def _echo(inputs: Mapping[str, str]) -> str:
    first = next(iter(v for _, v in sorted(inputs.items()) if v), "")
    words = re.sub(r"[\[\]{}\n\r\t#`]+", " ", first).split()[:_ECHO_WORDS]
    return " ".join(words)[:_ECHO_CHARS]


def plain_answer(inputs: Mapping[str, str]) -> str:
    return f"echo {_digest(inputs, '')[:8]}: {_echo(inputs)}".rstrip()


def field_value(name: str, annotation: str, inputs: Mapping[str, str], salt: str = "") -> Any:
    """A value of the annotated type, a pure function of (field name, inputs)."""
    ann = _unwrap_optional(annotation.strip())
    h = _digest(inputs, f"{name}{salt}")
    n = int(h[:8], 16)
    if ann == "str" or ann == "Reasoning":
        return f"{name} {h[:8]}: {_echo(inputs)}".rstrip()
    if ann == "int":
        return n % 1000
    if ann == "float":
        return round((n % 10000) / 100, 2)
    if ann == "bool":
        return n % 2 == 0
    if ann.startswith("Literal["):
        options = _literal_options(ann)
        return options[n % len(options)] if options else f"{name} {h[:8]}"
    inner = _generic_args(ann, ("list", "List", "tuple", "set"))
    if inner is not None:
        element = inner.split(",")[0].strip() or "str"
        return [field_value(name, element, inputs, salt=f"{salt}#{i}") for i in range(3)]
    inner = _generic_args(ann, ("dict", "Dict"))
    if inner is not None or ann in ("dict", "Dict"):
        value_type = inner.split(",", 1)[1].strip() if inner and "," in inner else "str"
        if value_type in ("Any", "typing.Any"):
            value_type = "str"
        return {"key": field_value(name, value_type, inputs, salt=f"{salt}#k")}
    # Unknown types (pydantic models, custom types): a string; use a custom responder instead.
    return f"{name} {h[:8]}: {_echo(inputs)}".rstrip()


def _balanced(line: str, start: int) -> str:
    """The text between the "(" before ``start`` and its matching ")"."""
    depth = 0
    for i in range(start, len(line)):
        ch = line[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            if depth == 0:
                return line[start:i]
            depth -= 1
    return line[start:].rstrip("):")


def _unwrap_optional(ann: str) -> str:
    for prefix in ("Optional[",):
        if ann.startswith(prefix) and ann.endswith("]"):
            return ann[len(prefix):-1].strip()
    if ann.startswith("Union[") and ann.endswith("]"):
        parts = [p.strip() for p in ann[6:-1].split(",") if p.strip() not in ("None", "NoneType")]
        return parts[0] if len(parts) == 1 else ann
    if "|" in ann:
        parts = [p.strip() for p in ann.split("|") if p.strip() not in ("None", "NoneType")]
        return parts[0] if len(parts) == 1 else ann
    return ann


def _generic_args(ann: str, names: tuple[str, ...]) -> str | None:
    for n in names:
        if ann.startswith(n + "[") and ann.endswith("]"):
            return ann[len(n) + 1:-1]
    return None


def _literal_options(ann: str) -> list[Any]:
    try:
        value = ast.literal_eval("[" + ann[len("Literal["):-1] + "]")
        return list(value)
    except (ValueError, SyntaxError):
        return [p.strip().strip("'\"") for p in ann[len("Literal["):-1].split(",")]
