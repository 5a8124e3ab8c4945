"""Cost on every result and job, --max-cost ending a live job as budget_exceeded, and identical rows
sent once: real redis-server, real `celery -A workers worker` processes, the OpenAI stand-in.

The expected cost of each item is recomputed from the usage the stand-in reported and the price map
(shared/cost.py), so a result carrying another item's cost, or a cost counted twice, fails here.
"""

import json
import os
import subprocess
import sys

import pytest

from producers import Client
from shared import keys
from shared.cost import prices_for
from tests.fakes.answers import expected_outputs
from tests.fakes.http_fake import estimate_tokens
from tests.fakes.openai_server import openai_messages, openai_reply
from tests.integration.question_rows import question_rows
from tests.processes import run_at_once
from tests.waiting import wait_for

SIG = "question -> answer"
MODEL = "openai/gpt-4o-mini"
SECRET = "sk-test-cost-secret-4242"


def direct_env(fake, **extra):
    env = {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": SECRET, "TIDYQ_MODEL": MODEL,
           "TIDYQ_CACHE_ENABLED": "false"}
    return env | {k: str(v) for k, v in extra.items()}


def rows(n, distinct=None, prefix="q"):
    return question_rows(n, distinct, prefix)


def reported_cost(body: dict, reply: str) -> float:
    """What the stand-in's usage for this request costs at the map's live price."""
    prices = prices_for("direct", MODEL)
    prompt = estimate_tokens("".join(m["content"] for m in openai_messages(body)))
    return prices.cost(prompt, estimate_tokens(reply))


def test_results_and_status_carry_cost_and_twins_are_sent_once(redis_url, start_worker, openai_fake):
    start_worker(queues=["predict.direct"], concurrency=1, env=direct_env(openai_fake))
    inputs = rows(60, distinct=45)  # 15 rows repeat an earlier one
    job = Client().submit_batch(inputs, SIG, backend="direct", model=MODEL, chunk_size=20)
    results = {r["custom_id"]: r for r in job.results(timeout=120)}
    assert sorted(results) == sorted(r["custom_id"] for r in inputs)
    assert openai_fake.request_count == 45  # every distinct question paid once, twins never sent

    by_question = {}
    for body in openai_fake.request_bodies:
        question = openai_messages(body)[-1]["content"]
        by_question[question] = body
    paid = 0.0
    for row in inputs:
        r = results[row["custom_id"]]
        assert r["status"] == "succeeded", r
        assert r["outputs"] == expected_outputs(row["inputs"], ["answer"])
        i = int(row["custom_id"][1:])
        if i >= 45:  # a twin: filled in from the first row with the same question
            assert r["cached"] is True and r["cost_usd"] == 0.0 and r["attempts"] == 0
            continue
        assert r["cached"] is False and r["cost_usd"] > 0
        body = next(b for q, b in by_question.items() if row["inputs"]["question"] in q)
        assert r["cost_usd"] == pytest.approx(reported_cost(body, openai_reply(body)), rel=1e-9)
        paid += r["cost_usd"]
    st = job.status()
    assert st["status"] == "completed" and st["counts"]["succeeded"] == 60
    assert st["cost_usd"] == pytest.approx(paid, rel=1e-6)


def test_max_cost_stops_a_live_job_within_one_chunk(redis_url, start_worker, openai_fake):
    """Four workers race one ceiling; the job ends budget_exceeded with the results so far kept."""
    openai_fake.set_latency(0.01)
    chunk = 10
    for _ in range(4):
        start_worker(queues=["predict.direct"], concurrency=1,
                     env=direct_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=4))
    inputs = rows(400)
    # the price of one item, from a probe job run first on the same stand-in
    probe = Client().submit_batch(rows(1, prefix="probe"), SIG, backend="direct", model=MODEL)
    one_item = next(iter(probe.results(timeout=60)))["cost_usd"]
    ceiling = one_item * 100
    job = Client().submit_batch(inputs, SIG, backend="direct", model=MODEL, chunk_size=chunk, max_cost_usd=ceiling)
    results = list(job.results(timeout=120))
    st = job.wait(timeout=60)
    assert st["status"] == "budget_exceeded"
    assert st["max_cost_usd"] == pytest.approx(ceiling)
    assert st["cost_usd"] >= ceiling
    overshoot = st["cost_usd"] - ceiling
    assert overshoot <= one_item * chunk  # at most one chunk's cost past the ceiling
    assert 100 <= st["counts"]["succeeded"] < 400
    # results that landed after the reader stopped are still stored and counted in the status
    assert len(results) <= st["counts"]["succeeded"]
    assert st["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in Client().job(job.id).results(follow=False)),
                                           rel=1e-6)
    print(json.dumps({"figure": "max_cost_overshoot", "ceiling_usd": ceiling, "spent_usd": st["cost_usd"],
                      "overshoot_items": round(overshoot / one_item, 2), "chunk_items": chunk, "workers": 4}))


def test_cli_estimate_prints_json_and_enqueues_nothing(redis_url, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(20, distinct=16)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"inputs": {"question": "ok"}}\n{"inputs": {"quest": "typo"}}\n')
    cli = [sys.executable, "-m", "producers.cli", "batch"]
    env = {**os.environ, "TIDYQ_REDIS_URL": redis_url}
    out, refused = run_at_once([([*cli, str(path), "-s", SIG, "-b", "direct", "-m", MODEL, "--estimate"], env),
                                ([*cli, str(bad), "-s", SIG, "-b", "mock", "--estimate"], env)], timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["items"] == 20 and report["sent_items"] == 16 and report["duplicates_folded"] == 4
    prices = prices_for("direct", MODEL)
    assert report["cost_usd"] == pytest.approx(prices.cost(report["input_tokens"], report["output_tokens"]), abs=1e-6)
    assert report["economy_cost_usd"] == pytest.approx(report["cost_usd"] / 2, rel=0.01)
    assert Client().store.list_jobs() == []  # nothing was enqueued

    assert refused.returncode == 2 and f"{bad}:2" in refused.stderr and "inputs.quest" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_tenant_daily_budget_ends_its_jobs_and_refuses_new_ones(redis_url, start_worker, openai_fake):
    from shared.budget import tenant_budgets
    from shared.config import get_settings
    from shared.errors import TidyqError

    probe_cost = prices_for("direct", MODEL).cost(60, 30)  # roughly one item
    budgets = json.dumps({"acme": probe_cost * 30})
    env = direct_env(openai_fake, TIDYQ_TENANT_BUDGETS=budgets, TIDYQ_CONCURRENCY_DIRECT=2)
    for _ in range(2):
        start_worker(queues=["predict.direct"], concurrency=1, env=env)
    os.environ["TIDYQ_TENANT_BUDGETS"] = budgets
    try:
        job = Client().submit_batch(rows(200, prefix="t"), SIG, backend="direct", model=MODEL, chunk_size=20,
                                    tenant="acme")
        st = job.wait(timeout=120)
        assert st["status"] == "budget_exceeded" and st["tenant"] == "acme"
        assert 0 < st["counts"]["succeeded"] < 200
        budgets_now = tenant_budgets(Client().store.r, get_settings())

        def settled():  # items in flight at the ceiling still land (and are charged) after the job ended:
            # wait for its last chunk to stop running, then the spend must equal the job's cost
            if Client().store.r.scard(keys.job_running_chunks(job.id)):
                return None
            report, cost = budgets_now.report("acme")[0], job.status()["cost_usd"]
            return report if report["spent_usd"] == pytest.approx(cost, rel=1e-6) else None

        report = wait_for(settled, 30, "the tenant's spend to equal the job's cost")
        assert list(report["jobs"]) == [job.id]
        assert report["spent_usd"] >= report["budget_usd"]
        with pytest.raises(TidyqError, match="tenant 'acme' has spent"):
            Client().submit_batch(rows(2, prefix="u"), SIG, backend="direct", model=MODEL, tenant="acme")
        other = Client().submit_batch(rows(3, prefix="v"), SIG, backend="direct", model=MODEL, tenant="globex")
        assert other.wait(timeout=60)["status"] == "completed"  # no budget set for globex
        out = subprocess.run([sys.executable, "-m", "producers.cli", "budget"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "TIDYQ_REDIS_URL": redis_url})
        assert out.returncode == 0, out.stderr
        tenants = {t["tenant"]: t for t in json.loads(out.stdout)["tenants"]}
        assert set(tenants) == {"acme", "globex"} and tenants["globex"]["budget_usd"] is None
        assert tenants["acme"]["spent_usd"] == pytest.approx(report["spent_usd"], rel=1e-6)
    finally:
        os.environ.pop("TIDYQ_TENANT_BUDGETS", None)


@pytest.mark.parametrize("args, where", [
    (["--max-cost", "-1"], "max_cost_usd"),
    (["--mode", "cheap"], "unknown mode 'cheap'"),
    (["--mode", "economy", "-b", "mock"], "economy mode needs --backend direct or bedrock"),
    (["--tenant", "bad tenant!"], "bad tenant"),
])
def test_cli_refuses_bad_cost_options_with_exit_2_and_enqueues_nothing(redis_url, tmp_path, capsys, args, where):
    from producers.cli import main

    path = tmp_path / "in.jsonl"
    path.write_text('{"inputs": {"question": "a"}}\n')
    base = ["batch", str(path), "-s", SIG, "-b", "direct", "-m", MODEL]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err
    assert Client().store.list_jobs() == []


def test_cli_budget_refuses_a_bad_day(redis_url, capsys):
    from producers.cli import main

    assert main(["budget", "--day", "yesterday"]) == 2
    assert "expected a date like 2026-12-01" in capsys.readouterr().err
    assert main(["budget", "--tenant", "nobody", "--day", "2026-01-02"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tenants": [{"tenant": "nobody", "day": "2026-01-02",
                                                                "spent_usd": 0.0, "budget_usd": None, "jobs": {}}]}
