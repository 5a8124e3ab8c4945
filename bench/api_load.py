"""Scenario 8, the REST API: (a) one API predict with ``?wait`` from submit to outputs (p50) against
the Python client's submit_predict().result() round trip, interleaved in blocks, both on the same
one-process mock worker (goal: ratio <= 1.5); (b) one API server process holding ``concurrent``
(200) ``?wait`` predicts at once: every one answered with its own outputs, the server's peak RSS."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from bench.harness import SIG, Env, median, percentile, proc_status_mb
from producers import Client
from producers.api.process import ApiServerProcess

TOKEN = "bench-api-token-0123456789"


def run(env: Env, n: int = 200, block: int = 25, concurrent: int = 200) -> dict:
    env.worker(queues=["predict.mock"], concurrency=1)
    server = ApiServerProcess({"TIDYQ_REDIS_URL": env.redis_url, "TIDYQ_API_TOKENS": TOKEN},
                              log_path=env.workdir / "api.log").start()
    env._scope.callback(server.stop)
    client = Client(env.redis_url)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    env._scope.callback(http.close)

    def via_api(i: int) -> float:
        start = time.perf_counter()
        r = http.post("/jobs", params={"wait": 30}, json={"signature": SIG, "backend": "mock",
                                                          "inputs": {"question": f"api {i}?"}})
        elapsed = time.perf_counter() - start
        assert r.status_code == 201 and r.json()["outputs"]["answer"], r.text
        return elapsed

    def via_client(i: int) -> float:
        start = time.perf_counter()
        assert client.submit_predict(SIG, {"question": f"client {i}?"}, backend="mock").result(timeout=30)["answer"]
        return time.perf_counter() - start

    for i in range(20):  # warm both paths (DSPy import in the server, connections)
        via_api(-i - 1)
        via_client(-i - 1)
    t_api: list[float] = []
    t_client: list[float] = []
    for b in range(max(1, n // block)):
        order = (via_api, via_client) if b % 2 == 0 else (via_client, via_api)
        for fn in order:
            (t_api if fn is via_api else t_client).extend(fn(b * block + i) * 1000 for i in range(block))
    a50, c50 = median(t_api), median(t_client)

    assert server.process is not None
    pid = server.process.pid
    peak = {"rss_mb": proc_status_mb(pid)}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["rss_mb"] = max(peak["rss_mb"], proc_status_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    answers, latencies = asyncio.run(_many(server.url, concurrent))
    held_s = time.perf_counter() - started
    stop.set()
    sampler.join()
    ok = sum(1 for i, a in enumerate(answers) if a and a.endswith(f"(many {i}?)"))
    return {"calls_each": len(t_api), "api_p50_ms": round(a50, 2), "api_p99_ms": round(percentile(t_api, 0.99), 2),
            "client_p50_ms": round(c50, 2), "client_p99_ms": round(percentile(t_client, 0.99), 2),
            "ratio_p50": round(a50 / c50, 3), "concurrent": concurrent, "concurrent_answered": ok,
            "concurrent_seconds": round(held_s, 2), "concurrent_p50_ms": round(median(latencies), 1),
            "concurrent_max_ms": round(max(latencies), 1), "server_peak_rss_mb": round(peak["rss_mb"], 1),
            "goal": "API p50 <= 1.5x the client's; all concurrent waits answered",
            "met": a50 / c50 <= 1.5 and ok == concurrent}


async def _many(url: str, n: int) -> tuple[list[str | None], list[float]]:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                                 limits=limits) as http:
        async def one(i: int) -> tuple[str | None, float]:
            start = time.perf_counter()
            r = await http.post("/jobs", params={"wait": 60}, json={"signature": SIG, "backend": "mock",
                                                                    "inputs": {"question": f"many {i}?"}})
            body = r.json() if r.status_code == 201 else {}
            return (body.get("outputs") or {}).get("answer"), (time.perf_counter() - start) * 1000

        done = await asyncio.gather(*(one(i) for i in range(n)))
    return [a for a, _ in done], [t for _, t in done]
