"""The item-level result cache on real `celery -A workers worker` processes, a real redis-server and
the loopback OpenAI stand-in. "No DSPy work" is read from the job's own usage (``lm_calls`` counts
every LM call DSPy made, LM-cache hits included) and "no provider call" from the stand-in's request
counter; the LM-call cache's entries are deleted between runs, so only the item cache can answer."""

from __future__ import annotations

import textwrap

import redis

from producers.client import Client
from tests.fakes.openai_server import expected_outputs

MODEL = "openai/gpt-4o-mini"
SIG = "question -> answer"
TTL = 600


def worker_env(fake, **extra) -> dict[str, str]:
    return {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-test", "TIDYQ_MODEL": MODEL,
            "TIDYQ_ITEM_CACHE_TTL_SECONDS": str(TTL), **{k: str(v) for k, v in extra.items()}}


def rows(n: int, tag: str, prefix: str = "q") -> list[dict]:
    return [{"custom_id": f"{prefix}{i}", "inputs": {"question": f"[{tag}] what is {i} + {i}?"}} for i in range(n)]


def run(client: Client, items: list[dict], **kw) -> tuple[dict[str, dict], dict]:
    job = client.submit_batch(items, kw.pop("signature", None if kw.get("program") else SIG), backend="direct", **kw)
    results = {r["custom_id"]: r for r in job.results(timeout=180)}
    assert sorted(results) == sorted(it["custom_id"] for it in items)
    assert all(r["status"] == "succeeded" for r in results.values()), results
    return results, job.status()


def lm_calls(status: dict) -> int:
    return int((status.get("usage") or {}).get("lm_calls", 0))


def forget_lm_cache(r: redis.Redis) -> None:
    for key in r.scan_iter("tidyq:cache:*"):
        r.delete(key)


def item_keys(r: redis.Redis) -> list[bytes]:
    return list(r.scan_iter("tidyq:item:*"))


def test_a_second_run_on_a_fresh_worker_is_answered_by_the_item_cache(redis_url, start_worker, openai_fake):
    r = redis.Redis.from_url(redis_url)
    client = Client()
    items = rows(40, "again")
    first_worker = start_worker(queues=["predict.direct"], env=worker_env(openai_fake))
    first, status = run(client, items, model=MODEL)
    assert openai_fake.request_count == 40 and lm_calls(status) == 40
    assert not any(res["cached"] for res in first.values())
    keys = item_keys(r)
    assert len(keys) == 40 and all(0 < r.ttl(k) <= TTL for k in keys)  # written with the results, with its TTL
    first_worker.stop(timeout=5)
    forget_lm_cache(r)

    start_worker(queues=["predict.direct"], env=worker_env(openai_fake))
    second, status = run(client, items, model=MODEL)
    assert openai_fake.request_count == 40  # no provider call
    assert lm_calls(status) == 0  # and no DSPy call at all
    assert status["counts"] == {"total": 40, "succeeded": 40, "failed": 0} and status["cost_usd"] == 0.0
    for it in items:
        got, was = second[it["custom_id"]], first[it["custom_id"]]
        assert got["outputs"] == was["outputs"] == expected_outputs(it["inputs"], ["answer"])
        assert (got["cached"], got["attempts"], got["cost_usd"]) == (True, 0, 0.0)
        assert (got["backend"], got["model"]) == ("direct", MODEL)

    # the same inputs under other custom_ids in another job (plus new ones): only the new ones are run
    mixed = [{"custom_id": f"other{i}", "inputs": it["inputs"]} for i, it in enumerate(items[:10])]
    mixed += rows(5, "fresh", prefix="new")
    third, status = run(client, mixed, model=MODEL)
    assert openai_fake.request_count == 45 and lm_calls(status) == 5
    assert [third[f"other{i}"]["cached"] for i in range(10)] == [True] * 10
    assert not any(third[f"new{i}"]["cached"] for i in range(5))


def test_another_target_or_signature_misses_and_a_job_may_opt_out(redis_url, start_worker, openai_fake):
    r = redis.Redis.from_url(redis_url)
    client = Client()
    items = rows(12, "scope")
    start_worker(queues=["predict.direct"], env=worker_env(openai_fake))
    run(client, items, model=MODEL)
    assert openai_fake.request_count == 12
    assert lm_calls(run(client, items, model=MODEL)[1]) == 0  # the same scope hits

    forget_lm_cache(r)
    _, status = run(client, items, model="openai/gpt-4o")  # another model
    assert lm_calls(status) == 12 and openai_fake.request_count == 24
    forget_lm_cache(r)
    _, status = run(client, items, model=MODEL, signature="question -> answer: str")  # another signature
    assert lm_calls(status) == 12  # (DSPy may render the same prompt: the worker's LM cache may answer)

    written = len(item_keys(r))
    fresh = rows(6, "optout", prefix="o")
    _, status = run(client, items[:6] + fresh, model=MODEL, item_cache=False)
    assert lm_calls(status) == 12  # six of them have cached answers: not read
    assert len(item_keys(r)) == written  # ... and nothing written
    _, status = run(client, fresh, model=MODEL)
    assert lm_calls(status) == 6  # so a job that may use the cache finds nothing of the opted-out one


def test_a_changed_program_misses_and_its_generation_settings_reach_the_provider(redis_url, start_worker,
                                                                                 openai_fake, tmp_path, monkeypatch):
    """An import-path program's identity is its package's source and JSON state: a new temperature in
    its code is a new key (the key itself never reads the code: tests/unit/test_item_cache.py)."""
    package = tmp_path / "cacheprogs"
    package.mkdir()
    (package / "__init__.py").write_text("")

    def write_program(temperature: float) -> None:
        (package / "qa.py").write_text(textwrap.dedent(f"""
            import dspy


            class QA(dspy.Module):
                def __init__(self):
                    super().__init__()
                    self.answer = dspy.Predict("question -> answer")

                def forward(self, question):
                    return self.answer(question=question, config={{"temperature": {temperature}}})
        """))

    write_program(0.0)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TIDYQ_PROGRAM_PACKAGES", "cacheprogs")
    env = worker_env(openai_fake, TIDYQ_PROGRAM_PACKAGES="cacheprogs", PYTHONPATH=str(tmp_path))
    r = redis.Redis.from_url(redis_url)
    client = Client()
    items = rows(8, "prog")
    worker = start_worker(queues=["predict.direct"], env=env)
    run(client, items, model=MODEL, program="cacheprogs.qa:QA")
    assert lm_calls(run(client, items, model=MODEL, program="cacheprogs.qa:QA")[1]) == 0
    assert openai_fake.request_count == 8
    worker.stop(timeout=5)

    write_program(0.7)
    forget_lm_cache(r)
    start_worker(queues=["predict.direct"], env=env)
    results, status = run(client, items, model=MODEL, program="cacheprogs.qa:QA")
    assert lm_calls(status) == 8 and openai_fake.request_count == 16
    assert not any(res["cached"] for res in results.values())
    assert {body["temperature"] for body in openai_fake.request_bodies[-8:]} == {0.7}


def test_the_opt_out_travels_from_the_cli_and_the_rest_api_into_the_job(redis_url, tmp_path, monkeypatch):
    import httpx
    from typer.testing import CliRunner

    from producers.api.process import ApiServerProcess
    from producers.cli import app

    monkeypatch.setenv("TIDYQ_SUBMIT_CHECK", "off")  # no worker here: only the stored spec is read
    store = Client().store
    file = tmp_path / "rows.jsonl"
    file.write_text("".join(f'{{"custom_id": "r{i}", "inputs": {{"question": "q{i}?"}}}}\n' for i in range(3)))
    specs = {}
    for flag in ("--no-item-cache", "--item-cache"):
        out = CliRunner().invoke(app, ["batch", str(file), "-s", SIG, "-b", "direct", "-m", MODEL, flag])
        assert out.exit_code == 0, out.output
        specs[flag] = store.spec(out.stdout.strip().splitlines()[-1]).item_cache
    assert specs == {"--no-item-cache": False, "--item-cache": True}

    token = "api-token-0123456789abcdef"
    server = ApiServerProcess({"TIDYQ_REDIS_URL": redis_url, "TIDYQ_API_TOKENS": token, "TIDYQ_SUBMIT_CHECK": "off"},
                              log_path=tmp_path / "api.log").start()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        rows_ = [{"custom_id": "a", "inputs": {"question": "x"}}]
        made = {}
        for name, kw in {"json off": {"json": {"signature": SIG, "backend": "direct", "model": MODEL, "rows": rows_,
                                               "item_cache": False}},
                         "json default": {"json": {"signature": SIG, "backend": "direct", "model": MODEL,
                                                   "rows": rows_}},
                         "predict off": {"json": {"signature": SIG, "backend": "direct", "model": MODEL,
                                                  "inputs": {"question": "x"}, "item_cache": False}},
                         "upload off": {"content": file.read_bytes(),
                                        "params": {"signature": SIG, "backend": "direct", "model": MODEL,
                                                   "item_cache": "false"},
                                        "headers": {**headers, "Content-Type": "application/x-ndjson"}}}.items():
            kw.setdefault("headers", headers)
            response = httpx.post(f"{server.url}/jobs", timeout=30, **kw)
            assert response.status_code == 201, response.text
            made[name] = store.spec(response.json()["id"]).item_cache
        assert made == {"json off": False, "json default": True, "predict off": False, "upload off": False}
    finally:
        server.stop()
