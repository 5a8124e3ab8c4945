"""Optimize jobs end to end: CLI -> optimize queue -> a real `celery -A workers worker` -> a
stand-in OpenAI provider that learns in context -> a real sqlite MLflow store -> a predict job
served by the registered version whose prompts carry its demos. Plus cancel and time limit."""

import json

from typer.testing import CliRunner

from producers.cli import app
from producers.client import Client
from tests.optimize_support import icl_reply, mlflow_template, mlflow_uri, sentiment_rows  # noqa: F401

MODEL = "openai/gpt-4o-mini"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _env(fake, mlflow_uri):
    return {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-test", "TIDYQ_MLFLOW_TRACKING_URI": mlflow_uri,
            "TIDYQ_CACHE_ENABLED": "false", "TIDYQ_OPTIMIZE_HEARTBEAT_SECONDS": "1"}


def test_trainset_and_one_command_give_a_version_a_predict_job_serves(redis_url, mlflow_uri, start_worker,
                                                                        openai_fake, tmp_path):
    from mlflow import MlflowClient

    openai_fake.set_responder(icl_reply)
    start_worker(queues=["optimize", "predict.direct"], concurrency=2, env=_env(openai_fake, mlflow_uri))
    train = _write(tmp_path / "train.jsonl", sentiment_rows(24))
    val = _write(tmp_path / "val.jsonl", sentiment_rows(20, offset=100))

    out = CliRunner().invoke(app, ["optimize", "--signature", "review -> sentiment", "--trainset", train,
                                   "--valset", val, "--optimizer", "bootstrap-fewshot", "--metric", "exact_match",
                                   "--name", "sentiment", "--backend", "direct", "--model", MODEL,
                                   "--set", "max_bootstrapped_demos=3", "--wait", "--timeout", "180"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "models:/sentiment/1"

    # the MLflow run: params, metrics (baseline and optimized on the valset, duration, LM calls,
    # tokens) and the program JSON artifact; the version points at that artifact
    client = MlflowClient(mlflow_uri)
    version = client.get_model_version("sentiment", "1")
    run = client.get_run(version.run_id)
    assert run.data.params["optimizer"] == "bootstrap-fewshot"
    assert run.data.params["optimizer.max_bootstrapped_demos"] == "3"
    m = run.data.metrics
    assert m["baseline_score"] == 0.0 and m["optimized_score"] >= 0.7
    assert m["lm_calls"] > 0 and m["input_tokens"] > 0 and m["duration_s"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "program")}
    assert artifacts == {"program/program.json", "program/spec.json"}
    assert not any(a.path.endswith((".pkl", "MLmodel")) for a in client.list_artifacts(run.info.run_id))

    # serve it: the prompts of the predict job carry the version's demos
    openai_fake.reset_counters()
    c = Client()
    outputs = c.submit_predict(None, {"review": "review 999: it was superb"}, backend="direct", model=MODEL,
                               program="models:/sentiment/1").result(timeout=60)
    assert outputs == {"sentiment": "positive"}
    prompt = json.dumps(openai_fake.request_bodies[-1]["messages"])
    demos = json.loads(open(programs_json(client, run.info.run_id)).read())["demos"]
    assert demos and all(d["review"] in prompt for d in demos)
    # the bare name follows the live alias (version 1, the first registered)
    assert c.submit_predict(None, {"review": "review 998: it was awful"}, backend="direct", model=MODEL,
                            program="sentiment").result(timeout=60) == {"sentiment": "negative"}


def programs_json(client, run_id):
    import mlflow

    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="program/program.json",
                                               tracking_uri=client._tracking_client.tracking_uri)


def test_cancel_and_time_limit(redis_url, mlflow_uri, start_worker, openai_fake, tmp_path):
    openai_fake.set_responder(icl_reply)
    openai_fake.set_latency(0.02)
    start_worker(queues=["optimize"], concurrency=1, env=_env(openai_fake, mlflow_uri))
    c = Client()
    rows = sentiment_rows(16)
    common = dict(signature="review -> sentiment", trainset=rows, valset=rows[:6], backend="direct", model=MODEL,
                  optimizer="bootstrap-random-search", settings={"num_candidate_programs": 200})

    limited = c.submit_optimize(name="limited", time_limit=3, **common)
    status = limited.wait(timeout=120)
    assert status["status"] == "completed", status
    assert status["result"]["stopped"] == "time_limit"
    assert status["result"]["model_uri"] == "models:/limited/1"

    job = c.submit_optimize(name="cancelled", **common)
    for _ in range(600):
        st = job.status()
        if (st.get("progress") or {}).get("phase") == "search":
            break
        import time
        time.sleep(0.05)
    assert st["progress"]["step"] >= 0 and "best_score" in st["progress"]
    assert job.cancel() in ("cancelling", "cancelled")
    final = job.wait(timeout=60)
    assert final["status"] == "cancelled"
    from mlflow import MlflowClient

    assert MlflowClient(mlflow_uri).search_model_versions("name='cancelled'") == []


def test_bad_optimize_input_exits_2_and_enqueues_nothing(redis_url, tmp_path):
    import redis

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"inputs": {"review": "x"}, "outputs": {"sentiment": "positive"}}) + "\n"
                     + json.dumps({"inputs": {"text": "x"}, "outputs": {"sentiment": "positive"}}) + "\n")
    runner = CliRunner()
    base = ["optimize", "--signature", "review -> sentiment", "--name", "s", "--backend", "mock"]
    out = runner.invoke(app, base + ["--trainset", str(train)])
    assert out.exit_code == 2 and "train.jsonl:2" in out.output and "inputs.text" in out.output
    assert runner.invoke(app, base + ["--trainset", str(train), "--optimizer", "adam"]).exit_code == 2
    assert runner.invoke(app, base + ["--trainset", str(train), "--set", "lr=1"]).exit_code == 2
    assert runner.invoke(app, base + ["--trainset", str(train), "--metric", "bleu"]).exit_code == 2
    assert redis.Redis.from_url(redis_url).keys("tidyq:job:*") == []
