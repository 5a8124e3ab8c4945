"""The `tidyq` CLI: the real console script against a real redis-server and worker; bad input
refused with file, line and field, exit 2 and nothing enqueued."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from producers.cli import app
from shared.queues import ALL_QUEUES

TIDYQ = str(Path(sys.executable).with_name("tidyq"))
SIG = "question -> answer"


def run(args, redis_url, timeout=120, **kw):
    env = dict(os.environ, TIDYQ_REDIS_URL=redis_url, LITELLM_LOCAL_MODEL_COST_MAP="True")
    return subprocess.run([TIDYQ, *args], env=env, capture_output=True, text=True, timeout=timeout, **kw)


def write_rows(path, n, prefix="q"):
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"{prefix}{i}", "inputs": {"question": f"Question {i}?"}}) + "\n")
    return path


def nothing_enqueued(redis_url):
    r = redis.Redis.from_url(redis_url)
    return all(r.llen(q) == 0 for q in ALL_QUEUES) and not r.keys("tidyq:job:*")


def test_batch_status_results_through_the_console_script(redis_url, mock_worker, tmp_path):
    src = write_rows(tmp_path / "in.jsonl", 120)
    sub = run(["batch", str(src), "--signature", SIG, "--backend", "mock"], redis_url)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    assert len(job_id) == 32 and "\n" not in job_id  # only the id on stdout: JOB=$(tidyq batch ...)
    out = tmp_path / "results.jsonl"
    res = run(["results", job_id, "--out", str(out), "--timeout", "60"], redis_url)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in lines) == sorted(f"q{i}" for i in range(120))
    assert all(r["status"] == "succeeded" for r in lines)
    st = run(["status", job_id], redis_url)
    status = json.loads(st.stdout)
    assert status["status"] == "completed" and status["counts"] == {"total": 120, "succeeded": 120, "failed": 0}
    assert run(["cancel", job_id], redis_url).stdout.strip() == "completed"  # already finished: unchanged


def test_batch_wait_writes_results_and_shows_progress_on_stderr(redis_url, mock_worker, tmp_path):
    src = write_rows(tmp_path / "in.jsonl", 50)
    out = tmp_path / "out.jsonl"
    res = run(["batch", str(src), "-s", SIG, "-b", "mock", "--wait", "--out", str(out)], redis_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    assert "50/50" in res.stderr and "completed: 50 succeeded, 0 failed" in res.stderr
    assert len(out.read_text().splitlines()) == 50
    pred = run(["predict", "-s", SIG, "-b", "mock", "--input", "question=What is 2+2?"], redis_url)
    assert pred.returncode == 0, pred.stderr
    assert "answer" in json.loads(pred.stdout)


def test_retry_through_the_cli(redis_url, start_worker, openai_fake, tmp_path):
    start_worker(queues=["predict.direct"], env={"TIDYQ_API_BASE": openai_fake.base_url, "TIDYQ_API_KEY": "sk-x-123456",
                                                 "TIDYQ_MODEL": "openai/gpt-4o-mini", "TIDYQ_CONCURRENCY_DIRECT": "1",
                                                 "TIDYQ_CACHE_ENABLED": "false"})
    openai_fake.fail_next(2, status=400)
    src = write_rows(tmp_path / "in.jsonl", 6)
    first = run(["batch", str(src), "-s", SIG, "-b", "direct", "--wait", "--out", str(tmp_path / "a.jsonl")], redis_url)
    assert first.returncode == 1, first.stderr  # some items failed
    job_id = first.stderr.split("job ", 1)[1].split()[0]
    again = run(["retry", job_id, "--wait", "--out", str(tmp_path / "b.jsonl")], redis_url)
    assert again.returncode == 0, again.stderr
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 2


BAD_CASES = {
    "not_json": ('{"custom_id": "a", "inputs": {"question": "x"}}\n{"custom_id": "b", "inputs": \n', [],
                 "in.jsonl:2: not JSON"),
    "unknown_field": ('{"inputs": {"question": "x"}}\n{"inputs": {"question": "y", "topic": "z"}}\n', [],
                      "in.jsonl:2: field 'inputs.topic': unknown input field 'topic'"),
    "duplicate_id": ('{"custom_id": "a", "inputs": {"question": "x"}}\n'
                     '{"custom_id": "a", "inputs": {"question": "y"}}\n',
                     [], "in.jsonl:2: field 'custom_id': duplicate custom_id 'a'"),
    "bad_signature": ('{"inputs": {"question": "x"}}\n', ["--signature", "question answer"],
                      "signature: bad signature"),
    "unknown_backend": ('{"inputs": {"question": "x"}}\n', ["--backend", "openai"],
                        "backend: unknown backend 'openai'"),
    "bad_fallback": ('{"inputs": {"question": "x"}}\n', ["--fallback", "nope:m"], "unknown backend 'nope'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_2_naming_where_and_enqueues_nothing(redis_url, tmp_path, case):
    content, extra, message = BAD_CASES[case]
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    args = ["batch", str(src), "--signature", SIG, "--backend", "mock", *extra]
    if "--signature" in extra:
        args = ["batch", str(src), "--backend", "mock", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert nothing_enqueued(redis_url)


def test_missing_file_and_unknown_job_exit_2_from_the_console_script(redis_url, tmp_path):
    res = run(["batch", str(tmp_path / "missing.jsonl"), "--signature", SIG, "--backend", "mock"], redis_url)
    assert res.returncode == 2 and "missing.jsonl: no such file" in res.stderr and "Traceback" not in res.stderr
    assert res.stdout == ""
    assert nothing_enqueued(redis_url)
    res = run(["status", "0" * 32], redis_url)
    assert res.returncode == 2 and "no job" in res.stderr
    res = run(["predict", "-s", SIG, "-b", "mock", "--input", "qestion=x"], redis_url)
    assert res.returncode == 2 and "unknown input field 'qestion'" in res.stderr
    assert nothing_enqueued(redis_url)


def test_usage_errors_exit_2(redis_url):
    result = CliRunner().invoke(app, ["batch"])
    assert result.exit_code == 2


def test_migrate_is_wired(tmp_path):
    pytest.importorskip("shared.migrate", reason="shared.migrate (another helper's module) is not there yet")
    from shared import migrate

    if not hasattr(migrate, "run"):
        pytest.skip("shared.migrate.run is not there yet")
    src = tmp_path / "ok.py"
    src.write_text("x = 1\n")
    result = CliRunner().invoke(app, ["migrate", str(src)])
    assert result.exit_code in (0, 1), result.output


def test_predict_takes_typed_inputs_as_json_with_colon_equals(redis_url, mock_worker):
    from producers.cli import _parse_inputs

    assert _parse_inputs(["numbers:=[1, 2, 3]", "scale:=0.5", "flag:=true", "question=[not json, a text]",
                          "eq=a=b"]) == {"numbers": [1, 2, 3], "scale": 0.5, "flag": True,
                                         "question": "[not json, a text]", "eq": "a=b"}
    sig = "numbers: list[int], scale: float, question -> answer"
    pred = run(["predict", "-s", sig, "-b", "mock", "-i", "numbers:=[1, 2, 3]", "-i", "scale:=0.5",
                "-i", "question=q"], redis_url)
    assert pred.returncode == 0 and "answer" in json.loads(pred.stdout), pred.stderr
    jobs_before = len(redis.Redis.from_url(redis_url).keys("tidyq:job:*"))
    bad = run(["predict", "-s", sig, "-b", "mock", "-i", "numbers:=[1, 2", "-i", "scale:=1", "-i", "question=q"],
              redis_url)
    assert bad.returncode == 2 and "numbers:= needs a JSON value" in bad.stderr and "Traceback" not in bad.stderr
    assert len(redis.Redis.from_url(redis_url).keys("tidyq:job:*")) == jobs_before  # nothing enqueued
