"""I/O-bound items on DSPy's async path in real `celery -A workers worker` processes, against the
loopback OpenAI stand-in (real wire format, latency, its own request limit answering 429 with
Retry-After and x-ratelimit-* headers), real redis-server. Every item's outputs are checked
exactly; concurrency is read from the stand-in's own in-flight counter, never from a clock."""

from __future__ import annotations

import json

import redis
from typer.testing import CliRunner

from producers.cli import app
from producers.client import Client
from shared.concurrency import fleet_summary
from tests.fakes.openai_server import expected_outputs
from tests.waiting import wait_for

MODEL = "openai/gpt-4o-mini"
TARGET = f"direct:{MODEL}"


def worker_env(fake, **extra) -> dict[str, str]:
    return {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-test", "TIDYQ_MODEL": MODEL,
            "TIDYQ_CACHE_ENABLED": "false", **{k: str(v) for k, v in extra.items()}}


def rows(n: int, tag: str) -> list[dict]:
    return [{"custom_id": f"{tag}{i}", "inputs": {"question": f"[{tag}] what is {i} + {i}?"}} for i in range(n)]


def assert_exact(job, items: list[dict], timeout: float = 240) -> dict:
    results = {r["custom_id"]: r for r in job.results(timeout=timeout)}
    assert sorted(results) == sorted(it["custom_id"] for it in items)
    for it in items:
        r = results[it["custom_id"]]
        assert r["status"] == "succeeded", r
        assert r["outputs"] == expected_outputs(it["inputs"], ["answer"])
    return results


def test_one_worker_process_keeps_hundreds_of_calls_in_flight(redis_url, start_worker, openai_fake):
    openai_fake.set_latency(1.0)
    # TIDYQ_CONCURRENCY_DIRECT unset: the default 32 is where the learned cap starts, not a ceiling
    start_worker(queues=["predict.direct"], concurrency=1, env=worker_env(openai_fake, TIDYQ_ASYNC_MAX_INFLIGHT=400))
    items = rows(400, "wide")
    job = Client().submit_batch(items, "question -> answer", backend="direct", model=MODEL, chunk_size=400)
    assert_exact(job, items)
    assert openai_fake.max_in_flight > 120  # a thread pool of 32 could never get here
    assert openai_fake.request_count == 400  # one provider call per item: nothing resubmitted
    summary = fleet_summary(redis.Redis.from_url(redis_url))
    assert summary[TARGET]["mode"] == "learned" and summary[TARGET]["limit"] > 32


def test_an_explicit_concurrency_setting_pins_the_cap(redis_url, start_worker, openai_fake):
    openai_fake.set_latency(0.2)
    start_worker(queues=["predict.direct"], concurrency=1, env=worker_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=5))
    items = rows(60, "pin")
    assert_exact(Client().submit_batch(items, "question -> answer", backend="direct", model=MODEL, chunk_size=60),
                 items)
    assert openai_fake.max_in_flight == 5


def test_learned_limit_backs_off_on_429_and_every_item_still_succeeds(redis_url, start_worker, openai_fake):
    openai_fake.set_latency(0.3)
    openai_fake.set_rate_limit(40)  # the provider's limit; the worker is not told it
    start_worker(queues=["predict.direct"], concurrency=1, env=worker_env(openai_fake))
    items = rows(300, "learn")
    results = assert_exact(Client().submit_batch(items, "question -> answer", backend="direct", model=MODEL,
                                                 chunk_size=300), items)
    refused = openai_fake.status_counts.get(429, 0)
    assert refused > 0  # it had to find the limit
    assert max(r["attempts"] for r in results.values()) > 1  # 429s were retried in place, and counted
    summary = fleet_summary(redis.Redis.from_url(redis_url))[TARGET]
    assert summary["mode"] == "learned" and summary["throttles"] > 0
    out = CliRunner().invoke(app, ["queues", "--once", "--json"])
    assert out.exit_code == 0, out.output
    shown = {c["target"]: c for c in json.loads(out.output)["concurrency"]}
    assert shown[TARGET]["mode"] == "learned" and shown[TARGET]["throttles"] > 0


def test_configured_rate_keeps_the_provider_under_its_limit(redis_url, start_worker, openai_fake):
    openai_fake.set_latency(0.5)
    openai_fake.set_rate_limit(40)
    env = worker_env(openai_fake, TIDYQ_RATE_LIMITS=json.dumps({"direct": {"rpm": 36 * 60}}))
    start_worker(queues=["predict.direct"], concurrency=1, env=env)
    items = rows(240, "conf")
    assert_exact(Client().submit_batch(items, "question -> answer", backend="direct", model=MODEL, chunk_size=240),
                 items)
    assert openai_fake.status_counts.get(429, 0) <= 0.01 * 240
    assert openai_fake.max_in_flight > 12  # rate x latency (36/s x 0.5 s), not a fixed 32-thread pool's worth
    summary = fleet_summary(redis.Redis.from_url(redis_url))[TARGET]
    assert summary["mode"] == "configured"


def test_cancel_stops_a_chunk_on_the_async_path_within_one_window(redis_url, start_worker, openai_fake):
    openai_fake.set_latency(0.5)
    start_worker(queues=["predict.direct"], concurrency=1,
                 env=worker_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=10))  # pinned: a window of 10 items
    job = Client().submit_batch(rows(400, "cancel"), "question -> answer", backend="direct", model=MODEL,
                                chunk_size=400)
    wait_for(lambda: job.status()["counts"]["succeeded"] >= 10, 60, "first results")
    assert job.cancel() in ("cancelling", "cancelled")
    st = wait_for(lambda: (s := job.status())["status"] == "cancelled" and s, 60, "cancelled")
    done = st["counts"]["succeeded"]
    assert 10 <= done < 400
    # the chunk stopped taking items: at most the window in flight at the cancel went to the provider after it
    assert openai_fake.request_count <= done + 2 * 10
    assert len(list(job.results(timeout=5))) == done
