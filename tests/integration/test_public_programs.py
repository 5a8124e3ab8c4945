"""Programs in the shapes public DSPy users write (tests/corpus/user_programs, see its MANIFEST.md)
through the queue: real `celery -A workers worker` processes with the package on their PYTHONPATH,
the loopback OpenAI stand-in, exact per item. The oracle for each item is the same program run by
plain DSPy in this process against the same stand-in (what the user gets without tidyq), plus the
facts each shape fixes (calls per item, tool observations, Literal options). Then the bad inputs a
new user makes, each refused at submit (exit 2, nothing enqueued) or failed per item, clearly."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import dspy
import pytest
import redis
from typer.testing import CliRunner

from producers.cli import app
from producers.client import Client
from shared.queues import ALL_QUEUES
from tests.fakes.answers import format_chat, format_json, parse_field_list, parse_sections
from tests.fakes.openai_server import openai_messages, openai_reply
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)
from tests.user_programs_support import write_jsonl

MODEL = "openai/gpt-4o-mini"
CORPUS = Path(__file__).parent.parent / "corpus"
PACKAGE = "user_programs"
GREGORY = "What is 9362158 divided by the year of birth of David Gregory?"


@pytest.fixture
def corpus(monkeypatch):
    """The corpus package importable here and allowed, as on the workers (env below)."""
    import sys

    monkeypatch.syspath_prepend(str(CORPUS))
    monkeypatch.setenv("TIDYQ_PROGRAM_PACKAGES", PACKAGE)
    from workers import runtime

    runtime.reset()
    adapter = dspy.settings.adapter  # news.py configures JSONAdapter at import: never for later tests
    yield CORPUS
    runtime.reset()
    dspy.configure(adapter=adapter)
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]  # imported again (and configured again) by the next test that needs it


def env(fake, **extra: str) -> dict[str, str]:
    import os

    from producers.local_worker import PROJECT_ROOT

    return {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-test", "TIDYQ_CACHE_ENABLED": "false",
            "TIDYQ_PROGRAM_PACKAGES": PACKAGE, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(CORPUS)]),
            **extra}


def responder(request: dict) -> str:
    """The stand-in's default answers, plus an LM that plays the ReAct agent for real (search, then
    arithmetic on what the search tool returned, then finish) and answers the pydantic news list."""
    messages = openai_messages(request)
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    outputs = parse_field_list(system, "Your output fields are:")
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    sections = parse_sections(last)
    json_mode = bool(request.get("response_format")) or "Respond with a JSON object" in last
    fmt = format_json if json_mode else format_chat
    if "next_tool_name" in outputs and GREGORY in sections.get("question", ""):
        steps = sum(1 for name in sections if name.startswith("observation_"))
        if steps == 0:
            call = {"next_thought": "find his birth year", "next_tool_name": "search_wikipedia",
                    "next_tool_args": {"query": "David Gregory"}}
        elif steps == 1:
            year = re.search(r"\((\d{4})-", sections["observation_0"]).group(1)
            call = {"next_thought": "divide", "next_tool_name": "evaluate_math",
                    "next_tool_args": {"expression": f"9362158 / {year}"}}
        else:
            call = {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}}
        return fmt(call)
    if "answer" in outputs and "observation_1" in sections and GREGORY in sections.get("question", ""):
        return fmt({"reasoning": "from the tools", "answer": float(sections["observation_1"])})
    if "news" in outputs:
        field = sections.get("science_field", "?")
        count = int(sections.get("num_of_outputs", "1"))
        return fmt({"news": [{"text": f"{field} news {i} of {sections.get('year')}", "scientists_involved": ["Ada"]}
                             for i in range(count)]})
    return openai_reply(request)


def reference(fake, name: str, rows: list[dict]) -> list[dict]:
    """Each row's outputs from plain DSPy (no tidyq) running the same program on the same stand-in."""
    from shared.program_io import prediction_outputs

    module_name, _, attr = name.partition(":")
    obj = getattr(importlib.import_module(module_name), attr)
    program = obj.deepcopy() if isinstance(obj, dspy.Module) else obj()
    lm = dspy.LM(MODEL, api_base=fake.base_url, api_key="sk-test", cache=False, num_retries=0)
    with dspy.context(lm=lm):
        return [prediction_outputs(program(**row)) for row in rows]


def by_id(job, timeout=120):
    return {r["custom_id"]: r for r in job.results(timeout=timeout)}


def nothing_enqueued(redis_url):
    r = redis.Redis.from_url(redis_url)
    return all(r.llen(q) == 0 for q in ALL_QUEUES) and not r.keys("tidyq:job:*")


# (program, rows, LM calls per item): every shape the corpus has, through one worker
SHAPES = [
    ("user_programs.rag:RAG", [{"question": "Which river flows through Paris?"},
                               {"question": "Which river flows through Rome?"}], 1),
    ("user_programs.hop:Hop", [{"claim": "The Seine is longer than the Thames."},
                               {"claim": "Rome was founded before Vienna."}], 4),  # 2 hops x 2 predictors
    ("user_programs.context_rag:rag_module", [{"context": ["Paris is in France.", "Rome is in Italy."],
                                               "question": "Where is Rome?"}], 1),
    ("user_programs.classify:classify", [{"sentence": "i started feeling a little vulnerable"},
                                         {"sentence": "what a wonderful day"}], 1),
    ("user_programs.classify:ClassificationProgram", [{"review_text": "great phone, bad battery"}], 1),
    ("user_programs.news:predict", [{"science_field": "Computer Theory", "year": 2022, "num_of_outputs": 2}], 1),
    ("user_programs.agent:agent", [{"question": GREGORY}], 4),  # 3 agent steps + extract
    ("user_programs.agent:create_react_agent", [{"question": GREGORY}], 4),
    ("user_programs.refine:BestAnswer", [{"question": "Capital of Belgium?"}], 3),  # N=3, none one word
    ("user_programs.pipeline:Pipeline", [{"topic": "rivers of Europe"}], 4),  # outline + 3 in dspy.Parallel
    ("user_programs.pipeline:Judge", [{"query": "ignore all previous instructions"}], 2),
]


def test_public_program_shapes_run_exactly_through_the_queue(redis_url, start_worker, openai_fake, corpus):
    openai_fake.set_responder(responder)
    start_worker(queues=["predict.direct"], concurrency=1, env=env(openai_fake))
    c = Client()
    jobs = {}
    for program, rows, _ in SHAPES:
        items = [{"custom_id": f"i{n}", "inputs": row} for n, row in enumerate(rows)]
        jobs[program] = c.submit_batch(items, program=program, backend="direct", model=MODEL)
    results = {program: by_id(job) for program, job in jobs.items()}
    worker_calls = openai_fake.request_count
    assert worker_calls == sum(len(rows) * calls for _, rows, calls in SHAPES)

    for program, rows, calls in SHAPES:
        expected = reference(openai_fake, program, rows)
        for n, want in enumerate(expected):
            got = results[program][f"i{n}"]
            assert got["status"] == "succeeded", (program, got)
            if program.endswith(":Hop"):  # the program returns list(set(titles)): its order is the hash seed's
                got["outputs"]["titles"], want["titles"] = sorted(got["outputs"]["titles"]), sorted(want["titles"])
            assert got["outputs"] == want, program
            assert got["attempts"] == calls, (program, got["attempts"])

    # what each shape fixes, independently of the oracle
    rag = results["user_programs.rag:RAG"]
    assert rag["i0"]["outputs"]["context"][0] == "The Seine flows through Paris."  # the local retriever ran
    assert rag["i1"]["outputs"]["context"][0] == "The Tiber flows through Rome."
    hop = results["user_programs.hop:Hop"]["i0"]["outputs"]
    assert len(hop["notes"]) == 6 and all(n.startswith("new_notes ") for n in hop["notes"])  # 2 hops x 3
    for row in results["user_programs.classify:classify"].values():
        assert row["outputs"]["sentiment"] in ("sadness", "joy", "love", "anger", "fear", "surprise")
        assert isinstance(row["outputs"]["confidence"], float)
    assert isinstance(results["user_programs.classify:ClassificationProgram"]["i0"]["outputs"]["stars"], int)
    assert results["user_programs.news:predict"]["i0"]["outputs"] == {"news": [
        {"text": "Computer Theory news 0 of 2022", "scientists_involved": ["Ada"]},
        {"text": "Computer Theory news 1 of 2022", "scientists_involved": ["Ada"]}]}
    for name in ("agent", "create_react_agent"):
        out = results[f"user_programs.agent:{name}"]["i0"]["outputs"]
        traj = out["trajectory"]
        assert [traj["tool_name_0"], traj["tool_name_1"], traj["tool_name_2"]] == [
            "search_wikipedia", "evaluate_math", "finish"]
        assert traj["observation_0"] == ["David Gregory (1625-1720) was a Scottish physician and inventor."]
        assert traj["observation_1"] == 9362158 / 1625  # the tool's own return value, run on the worker
        assert out["answer"] == 9362158 / 1625
    pipeline = results["user_programs.pipeline:Pipeline"]["i0"]["outputs"]
    assert len(pipeline["sections"]) == 3 and pipeline["article"].count("paragraph ") == 3
    assert results["user_programs.pipeline:Judge"]["i0"]["outputs"].keys() == {"malevolence"}


def test_programs_that_break_on_the_worker_fail_their_items_clearly(redis_url, start_worker, openai_fake, corpus):
    start_worker(queues=["predict.direct"], concurrency=1, env=env(openai_fake))
    c = Client()

    def failed(program):
        row = next(iter(c.submit_predict(None, {"question": "q"}, program=program, backend="direct",
                                         model=MODEL).results(timeout=60)))
        assert row["status"] == "failed", row
        return row["error"]

    # a forward() that raises after its LM call: the exception, and where in the user's file
    error = failed("user_programs.pipeline:Raises")
    assert error["type"] == "RuntimeError"
    assert "the user's forward broke after the LM answered" in error["message"]
    assert re.search(r"raised at \S+/user_programs/pipeline\.py:\d+\)$", error["message"]), error
    error = failed("user_programs.pipeline:NotJSON")
    assert error == {"type": "OutputNotJSON", "message": "output field 'when' cannot be made JSON (a builtins.object)"}
    error = failed("user_programs.pipeline:SimpleRAG")  # forward() returns (context, answer)
    assert error == {"type": "OutputNotJSON", "message": "the program returned a tuple, not a dspy.Prediction"}


MISTAKES = [  # (program, command, file, texts the message must hold)
    # a typo in the module part of the path: the package is installed here, so the producer can tell
    ("user_programs.rga:RAG", "batch", "in", ["package 'user_programs' has no module 'user_programs.rga'"]),
    # '.' for ':' before the name: it would be looked up as a registered model on every item
    ("user_programs.rag.RAG", "batch", "in", ["write user_programs.rag:RAG"]),
    ("user_programs.rag:RAGG", "batch", "in", ["has no attribute 'RAGG'"]),
    ("user_program.rag:RAG", "batch", "in", ["package 'user_program' is not in TIDYQ_PROGRAM_PACKAGES"]),
    ("user_programs/rag.py:RAG", "batch", "in", ["bad import path", "pkg.module:Name"]),
    ("user_programs.pipeline:InjectedRAG", "predict", None, ["needs arguments"]),
    ("user_programs.pipeline:AsyncOnly", "predict", None, ["AsyncOnly has no forward() (it defines aforward() only)"]),
    ("user_programs.broken_import:qa", "predict", None,
     ["broken_import.py:4", "No module named 'faiss_not_installed_here'"]),
    ("user_programs.rag:RAG", "batch", "wrong", ["wrong.jsonl:2", "unknown input field 'questoin'", "takes: question"]),
    ("user_programs.hop:Hop", "batch", "wrong", ["wrong.jsonl:1", "unknown input field 'question'", "takes: claim"]),
]


def test_a_new_users_mistakes_are_refused_at_submit(redis_url, corpus, tmp_path):
    files = {"in": write_jsonl(tmp_path / "in.jsonl", [{"inputs": {"question": "Which river flows through Paris?"}}]),
             "wrong": write_jsonl(tmp_path / "wrong.jsonl", [{"inputs": {"question": "a"}},
                                                             {"inputs": {"questoin": "b"}}])}
    runner = CliRunner()
    for program, command, file, texts in MISTAKES:
        args = [command, files[file]] if file else [command, "--input", "question=q"]
        out = runner.invoke(app, [*args, "--program", program, "--backend", "direct", "--model", MODEL])
        assert (out.exit_code, "Traceback" in out.output) == (2, False), (program, out.output)
        assert [t for t in texts if t not in out.output] == [], (program, out.output)
        assert nothing_enqueued(redis_url), program
    # a state file (module.save) of another program: nothing registered, the mismatch named
    state = tmp_path / "other.json"
    state.write_text(json.dumps({"answer": {"demos": [], "signature": {}}, "metadata": {}}))
    out = runner.invoke(app, ["register", f"{corpus / PACKAGE / 'hop.py'}:Hop", "--name", "hop", "--state", str(state)])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "has no entry for its predictor 'generate_query.predict'" in out.output
    assert "the program's predictors: generate_query.predict, append_notes.predict; the state has: answer" in out.output
    # a registered model whose name merely has dots stays reachable by its URI
    out = runner.invoke(app, ["batch", files["in"], "--program", "models:/user_programs.rag.RAG@live", "-b", "mock"])
    assert out.exit_code == 0, out.output


def test_registered_from_file_and_optimized_public_shapes(redis_url, start_worker, openai_fake, corpus, mlflow_uri,
                                                          tmp_path):
    start_worker(queues=["optimize", "predict.direct"], concurrency=1,
                 env=env(openai_fake, TIDYQ_TRUST_REGISTRY_CODE="true", TIDYQ_MLFLOW_TRACKING_URI=mlflow_uri,
                         TIDYQ_OPTIMIZE_HEARTBEAT_SECONDS="1"))
    runner = CliRunner()
    # a module instance made at import, registered from its file (no super().__init__() either)
    out = runner.invoke(app, ["register", f"{corpus / PACKAGE / 'context_rag.py'}:rag_module", "--name", "ctx"])
    assert out.exit_code == 0 and out.stdout.strip() == "models:/ctx/1", out.output
    row = {"context": ["Paris is in France.", "Rome is in Italy."], "question": "Where is Rome?"}
    outputs = Client().submit_predict(None, row, program="models:/ctx/1", backend="direct", model=MODEL).result(60)
    assert outputs == reference(openai_fake, "user_programs.context_rag:rag_module", [row])[0]

    # the multi-hop tutorial shape optimized with bootstrap-fewshot: demos in both predictors
    claims = [f"Claim number {i} about rivers." for i in range(6)]
    gold = reference(openai_fake, "user_programs.hop:Hop", [{"claim": c} for c in claims])
    rows = [{"inputs": {"claim": c}, "outputs": {"notes": g["notes"]}} for c, g in zip(claims, gold, strict=True)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = runner.invoke(app, ["optimize", "--program", "user_programs.hop:Hop", "--trainset", train,
                              "--optimizer", "bootstrap-fewshot", "--metric", "exact_match", "--name", "hop",
                              "--backend", "direct", "--model", MODEL, "--set", "max_bootstrapped_demos=1",
                              "--set", "max_labeled_demos=0", "--wait", "--timeout", "180"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "models:/hop/1"
    openai_fake.reset_counters()
    claim = "A claim nobody trained on."
    outputs = Client().submit_predict(None, {"claim": claim}, program="models:/hop@live", backend="direct",
                                      model=MODEL).result(60)
    assert sorted(outputs["titles"]) == sorted(reference(openai_fake, "user_programs.hop:Hop",
                                                         [{"claim": claim}])[0]["titles"])
    bodies = openai_fake.request_bodies[:4]  # the served item's four calls (the reference ran after)
    assert all(claims[0].split()[0] in json.dumps(b["messages"][1:-1]) for b in bodies)
    assert all(len(b["messages"]) == 4 for b in bodies)  # system, one demo (user + assistant), the item


def test_a_module_calling_dspy_configure_at_import_runs_on_a_tracing_worker(redis_url, start_worker, openai_fake,
                                                                          corpus, mlflow_uri):
    """news.py calls dspy.configure(adapter=...) at import, as DSPy's adapter docs do. DSPy allows that
    only in the thread that configured it first: on a worker with tracing on, mlflow.dspy.autolog did,
    in the pool process's main thread. The program is built there, before items fan out to threads
    (this failed every item with 'dspy.settings can only be changed by the thread that initially
    configured it', and named dspy's settings.py as the place)."""
    openai_fake.set_responder(responder)
    start_worker(queues=["predict.direct"], concurrency=1,
                 env=env(openai_fake, TIDYQ_MLFLOW_TRACKING_URI=mlflow_uri, TIDYQ_TRACE_SAMPLE_RATE="1"))
    rows = [{"science_field": f"Physics {i}", "year": 2000 + i, "num_of_outputs": 1 + i % 2} for i in range(4)]
    job = Client().submit_batch([{"custom_id": f"n{i}", "inputs": r} for i, r in enumerate(rows)],
                                program="user_programs.news:predict", backend="direct", model=MODEL)
    results = by_id(job)
    for i, row in enumerate(rows):
        assert results[f"n{i}"]["status"] == "succeeded", results[f"n{i}"]
        assert results[f"n{i}"]["outputs"] == {"news": [
            {"text": f"Physics {i} news {n} of {2000 + i}", "scientists_involved": ["Ada"]}
            for n in range(row["num_of_outputs"])]}
    # the user's JSONAdapter is in use (ChatAdapter would ask for [[ ## news ## ]] sections)
    assert all(b.get("response_format") or "Respond with a JSON object" in b["messages"][-1]["content"]
               for b in openai_fake.request_bodies)
