"""Child process of the memory scenario: submit a JSONL file with producers.Client, stream every
result back to a JSONL file, print one JSON line with this process's RSS (import, peak) and times.
Run as its own process so its peak RSS (VmHWM) is the producer's and nothing else's."""

from __future__ import annotations

import argparse
import json
import time

from bench.harness import SIG, proc_status_mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("out")
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    from producers import Client
    from producers.jsonl import JsonlWriter

    client = Client(args.redis_url)
    client.app  # the Celery producer is built before the baseline reading  # noqa: B018
    import os

    base = proc_status_mb(os.getpid(), "VmRSS")
    start = time.perf_counter()
    job = client.submit_file(args.file, SIG, backend="mock")
    submitted = time.perf_counter() - start
    with JsonlWriter(args.out) as out:
        n = out.write_all(job.results(timeout=900))
    print(json.dumps({"results": n, "submit_seconds": round(submitted, 2),
                      "total_seconds": round(time.perf_counter() - start, 2), "rss_after_import_mb": round(base, 1),
                      "peak_rss_mb": round(proc_status_mb(os.getpid(), "VmHWM"), 1)}), flush=True)


if __name__ == "__main__":
    main()
