"""Long soak: 50,000 mock items through one worker with two pool processes. The resident memory
of every pool process (read from /proc/<pid>/status while the job runs) must stay flat over the
second half: per-process caches are bounded and nothing grows per item or per chunk."""

import threading
import time

import pytest

from producers import Client
from tests.reliability.conftest import SIG, children, rows, rss_kb

N = 50_000
CHUNK = 250
GROWTH_LIMIT_KB = 6 * 1024  # per pool process, over the second half of the run


@pytest.mark.slow
def test_soak_50k_items_rss_stays_flat(redis_url, start_worker, figures, monkeypatch):
    # not under the coverage tracer (CI's `make test`): its line data would grow the RSS being
    # measured and halve the throughput; the same code paths are covered by tests/integration
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
    monkeypatch.delenv("COVERAGE_PROCESS_START", raising=False)
    worker = start_worker(queues=["predict.mock"], concurrency=2, env={"TIDYQ_CACHE_ENABLED": "false"})
    pool = children(worker.pid)
    assert len(pool) == 2, pool
    client = Client()
    samples: list[tuple[float, int, dict[int, int]]] = []
    stop = threading.Event()
    job_box = {}

    def sample() -> None:
        while not stop.wait(0.5):
            job = job_box.get("job")
            done = job.status()["counts"]["succeeded"] if job else 0
            samples.append((time.monotonic(), done, {pid: rss_kb(pid) or 0 for pid in pool}))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        job_box["job"] = job = client.submit_batch(rows(N, "soak"), SIG, backend="mock", chunk_size=CHUNK)
        st = job.wait(timeout=240, poll=0.5)
    finally:
        stop.set()
        sampler.join(timeout=5)
    elapsed = time.monotonic() - started
    assert st["status"] == "completed" and st["counts"] == {"total": N, "succeeded": N, "failed": 0}
    assert children(worker.pid) == pool  # no pool process was replaced (which would hide a leak)

    # RSS at about every 10% of the items
    curve = []
    for tenth in range(1, 11):
        at = next((s for s in samples if s[1] >= N * tenth / 10), samples[-1])
        curve.append({"items": at[1], "rss_mb": [round(at[2][pid] / 1024, 1) for pid in pool]})
    half = next(s for s in samples if s[1] >= N // 2)
    last = samples[-1]
    growth = {pid: last[2][pid] - half[2][pid] for pid in pool}
    figures("soak", {"items": N, "chunk_size": CHUNK, "seconds": round(elapsed, 1),
                     "items_per_s": round(N / elapsed), "rss_curve": curve,
                     "growth_second_half_kb": list(growth.values())})
    for pid, kb in growth.items():
        assert kb <= GROWTH_LIMIT_KB, (pid, kb, curve)
