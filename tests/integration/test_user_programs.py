"""Users' own DSPy programs through the queue: `--program pkg.module:Name` on real `celery -A workers
worker` processes whose PYTHONPATH holds the user's package (tests/user_code/userprogs), against the
loopback OpenAI stand-in; every item's outputs are checked exactly. Plus the refusals: at the
producer (exit 2, nothing enqueued) and on a worker whose settings differ (items fail, clearly)."""

import json

import pytest
import redis
from typer.testing import CliRunner

from producers.cli import app
from producers.client import Client
from shared.queues import ALL_QUEUES
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)
from tests.user_programs_support import (
    agent_question,
    multihop_expected,
    person_text,
    program_responder,
    worker_env,
    write_jsonl,
)

MODEL = "openai/gpt-4o-mini"


def nothing_enqueued(redis_url):
    r = redis.Redis.from_url(redis_url)
    return all(r.llen(q) == 0 for q in ALL_QUEUES) and not r.keys("tidyq:job:*")


def by_id(job, timeout=120):
    return {r["custom_id"]: r for r in job.results(timeout=timeout)}


@pytest.mark.slow
def test_multihop_batch_of_1000_every_item_exact_and_every_lm_call_counted(redis_url, start_worker, openai_fake,
                                                                           user_code, tmp_path):
    start_worker(queues=["predict.direct"], concurrency=2, env=worker_env(openai_fake))
    questions = {f"q{i}": f"Which river flows through city number {i}?" for i in range(1000)}
    rows = [{"custom_id": k, "inputs": {"question": q}} for k, q in questions.items()]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    job = Client().submit_file(src, program="userprogs.multihop:MultiHop", backend="direct", model=MODEL)
    results = by_id(job, timeout=280)
    assert sorted(results) == sorted(questions)
    for cid, question in questions.items():
        r = results[cid]
        assert r["status"] == "succeeded", r
        assert r["outputs"] == multihop_expected(question)
        assert isinstance(r["outputs"]["notes"], list) and len(r["outputs"]["notes"]) == 3
        assert r["attempts"] == 3  # three predictors: three provider calls per item, all counted
    assert openai_fake.request_count == 3 * len(questions)
    assert job.status()["counts"] == {"total": 1000, "succeeded": 1000, "failed": 0}


def test_react_agent_tools_and_pydantic_outputs_run_on_the_worker(redis_url, start_worker, openai_fake, user_code):
    openai_fake.set_responder(program_responder)
    start_worker(queues=["predict.direct"], concurrency=1, env=worker_env(openai_fake))
    c = Client()
    rows, answers = [], {}
    for i in range(12):
        question, answer = agent_question(i)
        rows.append({"custom_id": f"a{i}", "inputs": {"question": question}})
        answers[f"a{i}"] = answer
    results = by_id(c.submit_batch(rows, program="userprogs.agent:make_agent", backend="direct", model=MODEL))
    for cid, answer in answers.items():
        out = results[cid]["outputs"]
        assert results[cid]["status"] == "succeeded", results[cid]
        assert out["answer"] == answer
        traj = out["trajectory"]
        assert [traj["tool_name_0"], traj["tool_name_1"], traj["tool_name_2"]] == ["lookup_capital", "add", "finish"]
        assert traj["observation_0"] == answer.split()[0]  # the tools' own return values
        assert traj["observation_1"] == int(answer.split()[1])
        assert results[cid]["attempts"] == 4  # three agent steps and the extract step

    people = [person_text(i) for i in range(10)]
    rows = [{"custom_id": f"p{i}", "inputs": {"text": text, **({"hint": "bio"} if i % 2 else {})}}
            for i, (text, _) in enumerate(people)]
    results = by_id(c.submit_batch(rows, program="userprogs.typed:Extractor", backend="direct", model=MODEL))
    for i, (_, person) in enumerate(people):
        assert results[f"p{i}"]["outputs"] == {"person": person}

    opaque = c.submit_predict(None, {"text": "x"}, program="userprogs.typed:ReturnsOpaque", backend="direct",
                              model=MODEL)
    row = next(iter(opaque.results(timeout=60)))
    assert row["status"] == "failed" and row["error"]["type"] == "OutputNotJSON"
    assert "output field 'blob' cannot be made JSON" in row["error"]["message"]


def test_refusals_at_the_producer_exit_2_with_nothing_enqueued(redis_url, user_code, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", [{"inputs": {"question": "q"}}, {"inputs": {"questoin": "q"}}])
    runner = CliRunner()

    def refused(program, *expected, file=src):
        out = runner.invoke(app, ["batch", file, "--program", program, "--backend", "mock"])
        assert out.exit_code == 2, (program, out.output)
        assert "Traceback" not in out.output
        for text in expected:
            assert text in out.output, (program, out.output)
        assert nothing_enqueued(redis_url)

    refused("os.path:join", "package 'os' is not in TIDYQ_PROGRAM_PACKAGES")
    refused("userprogs.multihop:Nope", "has no attribute 'Nope'")
    refused("userprogs.odd:NOT_A_MODULE", "not a dspy.Module subclass or a zero-argument factory")
    refused("userprogs.odd:returns_string", "returned a str, not a dspy.Module")
    refused("userprogs.odd:needs_args", "needs arguments")
    refused("userprogs.broken:Never", "broken.py:5", "ValueError")
    refused("not a program", "models:/NAME/VERSION, models:/NAME@alias", "pkg.module:Name")
    refused("runs:/abc/model", "accepted forms")
    # inputs are checked against MultiHop.forward(question): line 2 names an unknown field
    refused("userprogs.multihop:MultiHop", "in.jsonl:2", "inputs.questoin")
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"inputs": {}}])
    refused("userprogs.multihop:MultiHop", "missing input field 'question'", file=missing)
    out = runner.invoke(app, ["predict", "--program", "userprogs.typed:Extractor", "-b", "mock", "--input", "txt=a"])
    assert out.exit_code == 2 and "unknown input field 'txt'" in out.output and "text, hint" in out.output
    assert nothing_enqueued(redis_url)


def test_workers_refuse_what_their_own_settings_do_not_allow(redis_url, start_worker, openai_fake, user_code,
                                                           mlflow_uri, tmp_path):
    # this worker lists another package and does not trust registry code
    start_worker(queues=["predict.direct"], concurrency=1,
                 env=worker_env(openai_fake, TIDYQ_PROGRAM_PACKAGES="otherpkg", TIDYQ_MLFLOW_TRACKING_URI=mlflow_uri))
    c = Client()
    rows = [{"custom_id": f"x{i}", "inputs": {"question": f"q{i}"}} for i in range(5)]
    results = by_id(c.submit_batch(rows, program="userprogs.multihop:MultiHop", backend="direct", model=MODEL))
    for r in results.values():
        assert r["status"] == "failed" and r["error"]["type"] == "ProgramRefused"
        assert "'userprogs' is not in TIDYQ_PROGRAM_PACKAGES (which lists otherpkg)" in r["error"]["message"]
    assert openai_fake.request_count == 0

    # registry code: registered here from its file, refused there while untrusted
    program_file = tmp_path / "rag.py"
    program_file.write_text((user_code / "userprogs" / "multihop.py").read_text())
    out = CliRunner().invoke(app, ["register", f"{program_file}:MultiHop", "--name", "rag"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "models:/rag/1"
    row = next(iter(c.submit_predict(None, {"question": "q"}, program="models:/rag/1", backend="direct",
                                     model=MODEL).results(timeout=60)))
    assert row["status"] == "failed" and row["error"]["type"] == "ProgramRefused"
    assert "TIDYQ_TRUST_REGISTRY_CODE=true" in row["error"]["message"]
    assert openai_fake.request_count == 0


def test_registered_code_served_when_trusted(redis_url, start_worker, openai_fake, user_code, mlflow_uri, tmp_path):
    start_worker(queues=["predict.direct"], concurrency=1,
                 env=worker_env(openai_fake, TIDYQ_PROGRAM_PACKAGES="", TIDYQ_TRUST_REGISTRY_CODE="true",
                                TIDYQ_MLFLOW_TRACKING_URI=mlflow_uri, PYTHONPATH=""))
    program_file = tmp_path / "rag.py"
    program_file.write_text((user_code / "userprogs" / "multihop.py").read_text())
    assert CliRunner().invoke(app, ["register", f"{program_file}:MultiHop", "--name", "rag"]).exit_code == 0
    question = "Who wrote the first program?"
    outputs = Client().submit_predict(None, {"question": question}, program="models:/rag@live", backend="direct",
                                      model=MODEL).result(timeout=180)  # a fresh worker first opens MLflow
    assert outputs == multihop_expected(question)
    bodies = [json.dumps(b["messages"]) for b in openai_fake.request_bodies]
    assert len(bodies) == 3


def _demo_messages(body):
    """(user, assistant) demo pairs in one request: everything between the system and the last user message."""
    return [m for m in body["messages"][1:-1]]


def test_optimized_multihop_is_registered_and_served_with_demos_in_every_predictor(redis_url, start_worker,
                                                                                   openai_fake, user_code,
                                                                                   mlflow_uri, tmp_path):
    from mlflow import MlflowClient

    start_worker(queues=["optimize", "predict.direct"], concurrency=2,
                 env=worker_env(openai_fake, TIDYQ_MLFLOW_TRACKING_URI=mlflow_uri,
                                TIDYQ_OPTIMIZE_HEARTBEAT_SECONDS="1"))
    questions = [f"Which bridge crosses river {i}?" for i in range(10)]
    rows = [{"inputs": {"question": q}, "outputs": {"answer": multihop_expected(q)["answer"]}} for q in questions]
    train, val = write_jsonl(tmp_path / "train.jsonl", rows[:6]), write_jsonl(tmp_path / "val.jsonl", rows[6:])
    runner = CliRunner()
    out = runner.invoke(app, ["optimize", "--program", "userprogs.multihop:MultiHop", "--trainset", train,
                              "--valset", val, "--optimizer", "bootstrap-fewshot", "--metric", "exact_match",
                              "--name", "hop", "--backend", "direct", "--model", MODEL,
                              "--set", "max_bootstrapped_demos=2", "--set", "max_labeled_demos=0",
                              "--wait", "--timeout", "180"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "models:/hop/1"

    client = MlflowClient(mlflow_uri)
    run_id = client.get_model_version("hop", "1").run_id
    import mlflow

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="program", tracking_uri=mlflow_uri,
                                                dst_path=str(tmp_path / "dl"))
    spec = json.loads(open(f"{local}/spec.json").read())
    assert spec["kind"] == "import" and spec["import_path"] == "userprogs.multihop:MultiHop"
    state = json.loads(open(f"{local}/program.json").read())
    assert {k: len(v["demos"]) for k, v in state.items() if k != "metadata"} == {
        "generate_query": 2, "take_notes": 2, "answer": 2}
    # bootstrapped demos are the program's own successful traces on the trainset
    assert {d["question"] for d in state["answer"]["demos"]} <= set(questions[:6])

    # served from the registry: every predictor's prompt carries its demos, the answer stays exact
    openai_fake.reset_counters()
    question = "Which bridge crosses river 99?"
    outputs = Client().submit_predict(None, {"question": question}, program="models:/hop@live", backend="direct",
                                      model=MODEL).result(timeout=60)
    assert outputs == multihop_expected(question)
    bodies = openai_fake.request_bodies
    assert len(bodies) == 3
    for body, predictor in zip(bodies, ("generate_query", "take_notes", "answer"), strict=True):
        demos = _demo_messages(body)
        assert len(demos) == 4  # two demos: user + assistant each
        for demo in state[predictor]["demos"]:
            assert demo["question"] in json.dumps(demos)

    # rollout / rollback work unchanged: v2 (same code, no demos) takes 100%, then gives it back
    assert runner.invoke(app, ["register", "userprogs.multihop:MultiHop", "--name", "hop"]).stdout.strip() == \
        "models:/hop/2"
    assert runner.invoke(app, ["rollout", "hop", "--candidate", "2", "--percent", "100"]).exit_code == 0
    openai_fake.reset_counters()
    Client().submit_predict(None, {"question": question}, program="hop", backend="direct", model=MODEL).result(60)
    assert all(len(_demo_messages(b)) == 0 for b in openai_fake.request_bodies)
    assert runner.invoke(app, ["rollback", "hop"]).exit_code == 0
    openai_fake.reset_counters()
    Client().submit_predict(None, {"question": question}, program="hop", backend="direct", model=MODEL).result(60)
    assert all(len(_demo_messages(b)) == 4 for b in openai_fake.request_bodies)
