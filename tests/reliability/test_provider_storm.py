"""A provider storm: 30% of calls answer 429/503 (with and without Retry-After), a few hang past
the request timeout. Every item must succeed, the attempts stay within the retry budget, and the
global rate limit (a Redis token bucket shared by every worker process) holds at the stand-in."""

import json

import pytest

from producers import Client
from shared.config import RetryConfig
from tests.fakes.answers import expected_outputs
from tests.reliability.conftest import SIG, direct_env, rows, wait_for

N = 200  # items per job; two jobs (without, then with Retry-After)
RPS = 25  # the global limit: 1,500 requests per minute
HANGS = 6


def max_window_ratio(rps: list[int]) -> float:
    """max over windows of k consecutive seconds of requests / (RPS * (k + 1))."""
    worst = 0.0
    for k in range(1, len(rps) + 1):
        for i in range(0, len(rps) - k + 1):
            worst = max(worst, sum(rps[i:i + k]) / (RPS * (k + 1)))
    return round(worst, 3)


@pytest.mark.slow
def test_storm_every_item_succeeds_within_budget_and_rate(redis_url, start_worker, openai_fake, figures):
    openai_fake.set_latency(0.03)
    env = direct_env(openai_fake, TIDYQ_CONCURRENCY_DIRECT=8, TIDYQ_REQUEST_TIMEOUT=2,
                     TIDYQ_RATE_LIMITS=json.dumps({"direct": {"rpm": RPS * 60}}),
                     # With the shipped breaker settings (opens at 50% failed calls over >= 10 calls) a
                     # 30% storm opens it now and then for 15-45 s and the job takes ~3 minutes; an
                     # operator facing a known-flaky provider raises the threshold. The breaker stays
                     # on: it is what sends an item whose in-place retries ran out back to the queue.
                     # An item whose retries ran out waits breaker_open_seconds in the queue (15 s
                     # shipped); 3 s here keeps the test short.
                     TIDYQ_BREAKER_FAILURE_RATE=0.75, TIDYQ_BREAKER_MIN_CALLS=20, TIDYQ_BREAKER_OPEN_SECONDS=3)
    for _ in range(2):
        start_worker(queues=["predict.direct"], concurrency=2, env=env)
    client = Client()
    budget = RetryConfig().max_retries + 1  # attempts one item may make in place
    report = {}
    for phase, retry_after in (("no_retry_after", None), ("retry_after_1s", 1.0)):
        openai_fake.reset_counters()
        openai_fake.set_failure_rate(0.3, (429, 503), retry_after=retry_after, seed=7)
        inputs = rows(N, phase)
        job = client.submit_batch(inputs, SIG, backend="direct", chunk_size=20)
        wait_for(lambda job=job: job.status()["counts"]["succeeded"] >= N // 3, 60, "a third of the items")
        openai_fake.hang_next(HANGS, seconds=3.0)  # above TIDYQ_REQUEST_TIMEOUT: client-side timeouts
        st = job.wait(timeout=150)
        results = list(job.results(timeout=10))
        failed = [r for r in results if r["status"] != "succeeded"]
        assert st["counts"] == {"total": N, "succeeded": N, "failed": 0}, failed[:3]
        by_id = {r["custom_id"]: r for r in results}
        for row in inputs:
            assert by_id[row["custom_id"]]["outputs"] == expected_outputs(row["inputs"], ["answer"])
        attempts = [r["attempts"] for r in results]
        calls = openai_fake.request_count
        statuses = openai_fake.status_counts
        rps = openai_fake.requests_per_second()
        report[phase] = {"items": N, "provider_calls": calls, "by_status": statuses, "hangs": HANGS,
                         "max_window": max_window_ratio(rps),
                         "attempts_max": max(attempts), "attempts_total": sum(attempts),
                         "attempts_per_item": round(calls / N, 2), "rps": rps, "rps_limit": RPS}
        assert max(attempts) <= budget
        assert calls <= N * budget
        assert statuses.get(429, 0) + statuses.get(503, 0) > 0.15 * calls  # the storm really happened
    figures("provider_storm", report)
    for phase in report.values():
        # token bucket: in any k whole seconds at most RPS*k plus one second of burst (the bucket
        # is full after an idle spell), plus slack for where the second boundaries fall
        assert phase["max_window"] <= 1.1, phase["rps"]
