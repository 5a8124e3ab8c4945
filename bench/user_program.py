"""A user's own program through the queue: a batch through the three-predictor MultiHop
(tests/user_code/userprogs: three LM calls with a Python retrieval step between them) on one
worker process with ``threads`` items in flight, against the same program's own in-process
``program.batch(examples, num_threads=threads)`` on the same lm15 engine and stand-in provider,
in the same run. Every result of both is checked exactly against the stand-in's answers.
Also measured: what the per-thread program copy costs (``program.deepcopy()``), against one call.

    python -m bench.user_program                  # 1,000 items, 50 ms provider, 32 threads
    python -m bench.user_program --items 200 --latency 0.02
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import dspy

from bench.harness import API_KEY, MODEL, Env, median
from producers import Client
from producers.local_worker import PROJECT_ROOT
from tests.user_programs_support import USER_CODE, multihop_expected

PROGRAM = "userprogs.multihop:MultiHop"


def items(n: int, tag: str) -> list[dict]:
    return [{"custom_id": f"{tag}-{i}", "inputs": {"question": f"[{tag}] Which river runs through town {i}?"}}
            for i in range(n)]


def in_process_seconds(lm, rows: list[dict], threads: int) -> float:
    from userprogs.multihop import MultiHop

    program = MultiHop()
    examples = [dspy.Example(**r["inputs"]).with_inputs("question") for r in rows]
    start = time.perf_counter()
    with dspy.context(lm=lm):
        results = program.batch(examples, num_threads=threads, disable_progress_bar=True)
    elapsed = time.perf_counter() - start
    wrong = [r for r, p in zip(rows, results, strict=True)
             if dict(p.items()) != multihop_expected(r["inputs"]["question"])]
    if wrong:
        raise RuntimeError(f"in-process batch: {len(wrong)} of {len(rows)} results differ")
    return elapsed


def queue_seconds(client: Client, rows: list[dict]) -> float:
    start = time.perf_counter()
    job = client.submit_batch(rows, program=PROGRAM, backend="direct", model=MODEL)
    results = {r["custom_id"]: r for r in job.results(timeout=900)}
    elapsed = time.perf_counter() - start
    wrong = [r["custom_id"] for r in rows if results.get(r["custom_id"], {}).get("outputs")
             != multihop_expected(r["inputs"]["question"])]
    if wrong:
        raise RuntimeError(f"queue: {len(wrong)} of {len(rows)} results differ or failed (first: {wrong[0]})")
    return elapsed


def copy_cost_ms(repeats: int = 200) -> float:
    from userprogs.multihop import MultiHop

    program = MultiHop()
    start = time.perf_counter()
    for _ in range(repeats):
        program.deepcopy()
    return (time.perf_counter() - start) * 1000 / repeats


def run(env: Env, n: int = 1000, latency: float = 0.05, threads: int = 32, repeats: int = 2) -> dict:
    sys.path.insert(0, str(USER_CODE))
    os.environ["TIDYQ_PROGRAM_PACKAGES"] = "userprogs"  # the producer checks items against forward()
    fake = env.fake(latency)
    path = os.pathsep.join([str(PROJECT_ROOT), str(USER_CODE)])
    env.worker(queues=["predict.direct"], concurrency=1,
               env=env.direct_env(fake, TIDYQ_CONCURRENCY_DIRECT=threads, TIDYQ_PROGRAM_PACKAGES="userprogs",
                                  TIDYQ_CACHE_ENABLED="false", PYTHONPATH=path))
    lm = dspy.LM(MODEL, engine="lm15", api_base=fake.base_url, api_key=API_KEY, cache=False, num_retries=0)
    client = Client(env.redis_url)
    queue_seconds(client, items(64, "warm"))
    in_process_seconds(lm, items(64, "warm-dspy"), threads)
    ours_runs, base_runs = [], []
    for r in range(repeats):  # alternating order, so a load change on the shared machine hits both
        for kind in (("queue", "dspy") if r % 2 == 0 else ("dspy", "queue")):
            if kind == "queue":
                ours_runs.append(queue_seconds(client, items(n, f"queue{r}")))
            else:
                base_runs.append(in_process_seconds(lm, items(n, f"dspy{r}"), threads))
    ours, base = median(ours_runs), median(base_runs)
    call_ms = latency * 1000
    copy_ms = copy_cost_ms()
    return {"items": n, "predictors": 3, "latency_s": latency, "threads": threads, "exact": True,
            "queue_items_per_s": round(n / ours, 1), "in_process_batch_items_per_s": round(n / base, 1),
            "ratio": round(base / ours, 3), "queue_seconds": [round(x, 3) for x in ours_runs],
            "in_process_seconds": [round(x, 3) for x in base_runs],
            "program_copy_ms": round(copy_ms, 3), "copy_vs_one_provider_call": round(copy_ms / call_ms, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.user_program", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tidyq-bench-") as tmp, Env(Path(tmp)) as env:
        result = run(env, args.items, args.latency, args.threads, args.repeats)
    result["seconds"] = round(time.time() - started, 1)
    result["load_avg"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
