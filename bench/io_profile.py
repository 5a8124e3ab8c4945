"""CPU per item of one worker's pool process on the I/O-bound path (scenario 3's shape: DIRECT
against the stand-in answering after 100 ms, one ``celery worker -c 1``, the in-flight cap left
to adapt, one chunk), optionally with a py-spy profile of that process. Not a scenario of
``python -m bench`` (it reports a cost, not a ratio); used for docs/performance.md:

    python -m bench.io_profile [--items 2000] [--py-spy OUT.txt]

``--py-spy`` records ``py-spy record --gil --threads -f raw`` (only samples holding the GIL, so
the shares are CPU, not waits). The threaded-DSPy figure is the baseline's CPU per item in this
process (32 threads, the same stand-in).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dspy

from bench.harness import API_KEY, MODEL, SIG, Env, group_pids, rows
from bench.io_bound import dspy_seconds
from producers import Client


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.io_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--py-spy", dest="py_spy", default="", help="write a raw py-spy profile here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tidyq-io-profile-") as tmp, Env(Path(tmp)) as env:
        fake = env.fake(0.1)
        worker = env.worker(queues=["predict.direct"], concurrency=1, env=env.direct_env(fake))
        client = Client(env.redis_url)
        warm = client.submit_batch(rows(200, "warm"), SIG, backend="direct", model=MODEL, chunk_size=200)
        assert sum(r["status"] == "succeeded" for r in warm.results(timeout=120)) == 200
        main_pid = worker.pid
        assert main_pid is not None
        pool = next(p for p in group_pids(os.getpgid(main_pid)) if p != main_pid and parent_of(p) == main_pid)
        spy = None
        if args.py_spy:
            exe = shutil.which("py-spy") or "py-spy"
            spy = subprocess.Popen([exe, "record", "-p", str(pool), "-r", "200", "-o", args.py_spy, "-f", "raw",
                                    "--threads", "--gil", "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        try:
            before, started = cpu_seconds(pool), time.perf_counter()
            job = client.submit_batch(rows(args.items, "load"), SIG, backend="direct", model=MODEL,
                                      chunk_size=args.items)
            ok = sum(r["status"] == "succeeded" for r in job.results(timeout=600))
            elapsed, used = time.perf_counter() - started, cpu_seconds(pool) - before
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
        print(f"queue: {ok}/{args.items} items in {elapsed:.2f} s = {args.items / elapsed:.0f}/s; worker pool "
              f"process CPU {used:.2f} s = {1000 * used / args.items:.2f} ms/item (load {os.getloadavg()[0]:.1f})")
        lm = dspy.LM(MODEL, engine="lm15", api_base=fake.base_url, api_key=API_KEY, cache=False, num_retries=0)
        dspy_seconds(lm, rows(100, "warm-dspy"), 32)
        before = time.process_time()
        seconds = dspy_seconds(lm, rows(1000, "dspy"), 32)
        used = time.process_time() - before
        print(f"threaded DSPy (32 threads): 1000 items in {seconds:.2f} s = {1000 / seconds:.0f}/s; "
              f"CPU {used:.2f} s = {used:.2f} ms/item")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
