"""Test support for optimize/registry/tracking tests: a real sqlite MLflow store per test (copied
from a session template, since creating the schema costs ~10 s) and an in-context-learning
stand-in for the OpenAI fake (answers by copying the nearest few-shot demo in the prompt).

The ICL responder is what makes optimizer scores move offline: without demos it answers
"unknown", with demos it answers like the demo whose inputs share the most words with the
question. So a program whose prompt carries good demos scores higher, which is exactly what
few-shot optimizers are for.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.fakes.answers import format_chat, format_json, parse_field_list, parse_sections
from tests.fakes.openai_server import openai_messages

POSITIVE = ("great", "lovely", "excellent", "wonderful", "superb")
NEGATIVE = ("awful", "boring", "terrible", "dreadful", "clumsy")


def sentiment_rows(n: int, offset: int = 0) -> list[dict]:
    """Rows {"inputs": {"review"}, "outputs": {"sentiment"}}; the adjective decides the label."""
    words = POSITIVE + NEGATIVE
    rows = []
    for i in range(offset, offset + n):
        adj = words[(i * 7) % len(words)]
        rows.append({"inputs": {"review": f"review {i}: it was {adj}"},
                     "outputs": {"sentiment": "positive" if adj in POSITIVE else "negative"}})
    return rows


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2}


def icl_reply(request: dict) -> str:
    """OpenAI request -> ChatAdapter (or JSON) answer copied from the nearest demo."""
    messages = openai_messages(request)
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    outputs = list(parse_field_list(system, "Your output fields are:")) or ["answer"]
    inputs = set(parse_field_list(system, "Your input fields are:"))
    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    current = parse_sections(turns[-1]["content"], keep=lambda n: n in inputs) if turns else {}
    want = _words(" ".join(current.values()))
    best, best_score = None, 0.0
    for user, assistant in zip(turns[:-1], turns[1:-1], strict=False):
        if user["role"] != "user" or assistant["role"] != "assistant":
            continue
        demo_in = parse_sections(user["content"], keep=lambda n: n in inputs)
        demo_out = parse_sections(assistant["content"], keep=lambda n: n in outputs)
        score = len(want & _words(" ".join(demo_in.values())))
        if demo_out and score > best_score:
            best, best_score = demo_out, score
    values = {name: (best or {}).get(name, "unknown") for name in outputs}
    rf = request.get("response_format") or {}
    return format_json(values) if rf.get("type") in ("json_object", "json_schema") else format_chat(values)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """A migrated, empty sqlite MLflow database made once per session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(mlflow_template, tmp_path, monkeypatch):
    """A fresh real sqlite MLflow store for this test, exported as TIDYQ_MLFLOW_TRACKING_URI."""
    from shared import programs, registry, tracking

    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("TIDYQ_MLFLOW_TRACKING_URI", uri)
    registry.reset_registries()
    programs.reset_cache()
    tracking.gate.reset()
    tracking._experiments.clear()
    yield uri
    registry.reset_registries()
    programs.reset_cache()
    tracking.gate.reset()
