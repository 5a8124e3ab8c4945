"""The cost figures of docs/economy.md, measured in one run (``python -m bench.economy_figures``).

1. A 5,000-row file with 20% repeated rows in economy mode against the OpenAI Files + Batches
   stand-in: every item checked against its own expected answer, provider requests counted (batch
   lines plus calls finished live), the job's cost against the live price of the same usage.
2. ``--estimate`` of that file against the usage the stand-in reported.
3. A live job with --max-cost and four workers racing its ceiling: the overshoot in items.

Everything runs on loopback (a private redis-server, real worker processes) and is stopped at the
end. Figures are printed as JSON; nothing is asserted against wall-clock limits.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from producers import Client
from producers.estimate import estimate_file
from producers.local_worker import LocalWorker
from shared.config import get_settings
from shared.cost import prices_for
from shared.redis_server import RedisServer
from tests.fakes.answers import expected_outputs
from tests.fakes.openai_batches import OpenAIBatchFake

SIG = "question -> answer"
MODEL = "openai/gpt-4o-mini"


def _rows(n: int, distinct: int) -> list[dict]:
    return [{"custom_id": f"r{i}", "inputs": {"question": f"How many legs do {i % distinct} spiders have?"}}
            for i in range(n)]


def _env(fake: OpenAIBatchFake) -> dict[str, str]:
    return {"TIDYQ_API_BASE": fake.base_url, "TIDYQ_API_KEY": "sk-bench-economy", "TIDYQ_MODEL": MODEL,
            "TIDYQ_CACHE_ENABLED": "false", "TIDYQ_ECONOMY_POLL_SECONDS": "0.5", "TIDYQ_ECONOMY_POLL_MAX_SECONDS": "2"}


def _reported_usage(fake: OpenAIBatchFake) -> tuple[int, int]:
    tokens_in = tokens_out = 0
    for data in list(fake.files.values()):
        for raw in data.decode().splitlines():
            usage = ((json.loads(raw).get("response") or {}).get("body") or {}).get("usage")
            if usage:
                tokens_in += usage["prompt_tokens"]
                tokens_out += usage["completion_tokens"]
    return tokens_in, tokens_out


def economy_figures(redis_url: str, workdir: Path) -> dict:
    fake = OpenAIBatchFake(batch_seconds=2.0).start()
    worker = LocalWorker(redis_url, queues=["predict.direct"], concurrency=2, env=_env(fake)).start(timeout=120)
    try:
        rows = _rows(5000, 4000)
        path = workdir / "economy.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        started = time.perf_counter()
        job = Client(redis_url).submit_file(path, SIG, backend="direct", model=MODEL, mode="economy")
        results = {r["custom_id"]: r for r in job.results(timeout=600)}
        seconds = time.perf_counter() - started
        status = job.wait(timeout=60)
        wrong = sum(results[r["custom_id"]]["outputs"] != expected_outputs(r["inputs"], ["answer"]) for r in rows)
        live_calls = sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))
        tokens_in, tokens_out = _reported_usage(fake)
        prices = prices_for("direct", MODEL)
        live_price = prices.cost(tokens_in, tokens_out)
        estimate = estimate_file(path, signature=SIG, program=None, backend="direct", model=MODEL,
                                 settings=get_settings())
        return {
            "items": len(rows), "distinct": 4000, "results": len(results), "wrong_answers": wrong,
            "status": status["status"], "provider_batches": len(status["provider_batches"] or []),
            "provider_requests": fake.batch_lines + live_calls, "batch_lines": fake.batch_lines,
            "finished_live": live_calls, "seconds": round(seconds, 1),
            "job_cost_usd": status["cost_usd"], "live_price_usd": round(live_price, 6),
            "cost_ratio": round(status["cost_usd"] / live_price, 4) if live_price else None,
            "estimate": {"input_tokens": estimate["input_tokens"], "output_tokens": estimate["output_tokens"],
                         "reported_input_tokens": tokens_in, "reported_output_tokens": tokens_out,
                         "economy_cost_usd": estimate["economy_cost_usd"],
                         "cost_error": round(estimate["economy_cost_usd"] / prices.cost(tokens_in, tokens_out,
                                                                                        batch=True) - 1, 4)},
        }
    finally:
        worker.stop(timeout=5)
        worker.close()
        fake.stop()


def overshoot_figures(redis_url: str) -> dict:
    fake = OpenAIBatchFake().start()
    fake.set_latency(0.01)
    env = _env(fake) | {"TIDYQ_CONCURRENCY_DIRECT": "4"}
    workers = [LocalWorker(redis_url, queues=["predict.direct"], env=env).start(timeout=120) for _ in range(4)]
    try:
        client = Client(redis_url)
        probe = client.submit_batch(_rows(1, 1), SIG, backend="direct", model=MODEL)
        one = next(iter(probe.results(timeout=60)))["cost_usd"]
        runs = []
        for chunk in (10, 25):
            rows = [{"custom_id": f"o{chunk}-{i}", "inputs": {"question": f"Is {i} odd or even?"}} for i in range(600)]
            job = client.submit_batch(rows, SIG, backend="direct", model=MODEL, chunk_size=chunk,
                                      max_cost_usd=one * 100)
            status = job.wait(timeout=120)
            runs.append({"chunk_items": chunk, "status": status["status"], "ceiling_items": 100,
                         "spent_items": round(status["cost_usd"] / one, 2),
                         "overshoot_items": round((status["cost_usd"] - one * 100) / one, 2),
                         "succeeded": status["counts"]["succeeded"]})
        return {"workers": 4, "concurrency_per_worker": 4, "runs": runs}
    finally:
        for w in workers:
            w.stop(timeout=5)
            w.close()
        fake.stop()


def main() -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="tidyq-economy-") as tmp:
        figures = {"economy": economy_figures(server.url, Path(tmp)), "max_cost": overshoot_figures(server.url)}
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
