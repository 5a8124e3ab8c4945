"""`tidyq jobs` and `tidyq queues --once` as users run them: the real CLI in a subprocess, a real
Celery worker, jobs with failed items; output read from an 80-column pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from producers.client import Client
from tests.processes import run_at_once
from tests.waiting import wait_for

TIDYQ = os.path.join(os.path.dirname(sys.executable), "tidyq")
SIG = "question -> answer"


def cli(redis_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, TIDYQ_REDIS_URL=redis_url, COLUMNS="80")
    out = subprocess.run([TIDYQ, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def clis(redis_url: str, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """``cli`` for each command, all run at once; in order."""
    env = dict(os.environ, TIDYQ_REDIS_URL=redis_url, COLUMNS="80")
    return run_at_once([([TIDYQ, *args], env) for args in commands])


def rows(n: int, bad_every: int = 0) -> list[dict]:
    """Questions; every ``bad_every``-th one longer than the worker's TIDYQ_MAX_ITEM_BYTES, so it fails."""
    return [{"custom_id": f"q{i}", "inputs": {"question": ("x" * 300) if bad_every and i % bad_every == 0
                                              else f"question {i}?"}} for i in range(n)]


def test_jobs_lists_recent_jobs_with_full_ids_counts_and_filters(redis_url, start_worker):
    start_worker(queues=["predict.mock"], env={"TIDYQ_MAX_ITEM_BYTES": "200"})
    client = Client(redis_url)
    clean = client.submit_batch(rows(40), SIG, backend="mock")
    assert clean.wait(timeout=60)["counts"]["failed"] == 0
    mixed = client.submit_batch(rows(60, bad_every=4), SIG, backend="mock", chunk_size=10)
    assert mixed.wait(timeout=60)["counts"] == {"total": 60, "succeeded": 45, "failed": 15}
    queued = client.submit_batch(rows(5), SIG, backend="direct", model="openai/gpt-4o-mini")  # no direct worker

    out, completed, newest, running_or_cancelled, predicts, running, bad, train, zero = clis(
        redis_url, ["jobs"], ["jobs", "--json", "--status", "completed"], ["jobs", "--json", "--limit", "1"],
        ["jobs", "--json", "--status", "running,cancelled"], ["jobs", "--json", "--kind", "predict"],
        ["jobs", "--status", "running"], ["jobs", "--status", "finished"], ["jobs", "--kind", "train"],
        ["jobs", "--limit", "0"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "KIND", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == [queued.id, mixed.id, clean.id]  # newest first, whole ids
    by_id = {line.split()[0]: line.split() for line in lines[1:]}
    assert by_id[mixed.id][1:5] == ["batch", "completed", "60/60", "15"]
    assert by_id[queued.id][1:5] == ["batch", "queued", "0/5", "0"]
    assert by_id[queued.id][-1] == "direct:openai/gpt-4o-mini"
    assert float(by_id[mixed.id][5].replace(",", "")) > 0  # items/s of a finished job

    data = json.loads(completed.stdout)
    assert [j["id"] for j in data] == [mixed.id, clean.id]
    assert data[0]["error_types"] == {"BadInput": 15} and data[0]["failed"] == 15
    assert data[0]["items_per_second"] > 0 and data[0]["started_at"] <= data[0]["finished_at"]
    assert [j["id"] for j in json.loads(newest.stdout)] == [queued.id]
    assert json.loads(running_or_cancelled.stdout) == []
    assert json.loads(predicts.stdout) == []
    assert running.stderr.strip() == "tidyq: no jobs in state running"

    assert bad.returncode == 2 and "--status: unknown status 'finished'" in bad.stderr
    assert train.returncode == 2
    assert zero.returncode == 2


def test_queues_once_never_cuts_a_running_job_id_in_an_80_column_pipe(redis_url, start_worker, openai_fake):
    openai_fake.set_latency(0.1)  # 200 items, 2 in flight: ~10 s of running job to look at
    start_worker(queues=["predict.direct"], env={"TIDYQ_API_BASE": openai_fake.base_url, "TIDYQ_API_KEY": "sk-test",
                                                 "TIDYQ_MODEL": "openai/gpt-4o-mini", "TIDYQ_CACHE_ENABLED": "false",
                                                 "TIDYQ_CONCURRENCY_DIRECT": "2", "TIDYQ_METRICS_INTERVAL": "0.3"})
    job = Client(redis_url).submit_batch(rows(200), SIG, backend="direct", chunk_size=10)

    def shown():
        text = cli(redis_url, "queues", "--once").stdout
        return text if job.id in text else None

    text = wait_for(shown, timeout=60, what="the running job in `tidyq queues --once`")
    line = next(line for line in text.splitlines() if job.id in line)
    assert "running" in line and "batch" in line and "direct" in line and "…" not in line
    job.cancel()
    wait_for(lambda: job.status()["status"] == "cancelled", timeout=60, what="the job cancelled")
