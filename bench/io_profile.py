"""CPU per item of one worker's pool process on the I/O-bound path (scenario 3's shape: DIRECT
against the stand-in answering after 100 ms, one ``celery worker -c 1``, the in-flight cap left
to adapt, one chunk), optionally with a py-spy profile of that process. Not a scenario of
``python -m bench`` (it reports a cost, not a ratio); used for docs/performance.md:

    python -m bench.io_profile [--items 2000] [--repeat N] [--py-spy OUT.txt [--all-samples]]

``--py-spy`` records ``py-spy record --gil --threads -f raw`` (only samples holding the GIL, so
the shares are CPU, not waits). CPU per thread comes from /proc (names from ``py-spy dump``).
The threaded-DSPy figure is the baseline's CPU per item in this
process (32 threads, the same stand-in).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
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


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of a process: shows what runs off the event loop's thread
    (asyncio's default executor, the chunk runner, the writers)."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def thread_names(pid: int, exe: str) -> dict[int, str]:
    """Python thread names by thread id (the OS names are all "python"), from one py-spy dump;
    names that end in a number (pool threads: asyncio_0, asyncio_1, ...) lose it, to be summed."""
    try:
        dump = subprocess.run([exe, "dump", "-p", str(pid), "-j"], capture_output=True, text=True, timeout=30)
        threads = json.loads(dump.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    return {t["os_thread_id"]: (t.get("thread_name") or "?").rstrip("0123456789_") for t in threads
            if t.get("os_thread_id")}


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def queue_run(client: Client, pool: int, items: int, tag: str) -> tuple[float, float, dict[int, float]]:
    """(seconds, pool process CPU seconds, CPU seconds per thread id) of one job of ``items``."""
    threads_before = thread_cpu(pool)
    before, started = cpu_seconds(pool), time.perf_counter()
    job = client.submit_batch(rows(items, tag), SIG, backend="direct", model=MODEL, chunk_size=items)
    ok = sum(r["status"] == "succeeded" for r in job.results(timeout=600))
    if ok != items:
        raise RuntimeError(f"io_profile: {ok} of {items} items succeeded")
    elapsed, used = time.perf_counter() - started, cpu_seconds(pool) - before
    return elapsed, used, {tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in thread_cpu(pool).items()}


def by_thread_name(threads: dict[int, float], names: dict[int, str], items: int) -> str:
    by_name: dict[str, float] = {}
    for tid, cpu in threads.items():
        name = names.get(tid, f"thread {tid}")
        by_name[name] = by_name.get(name, 0.0) + cpu
    return ", ".join(f"{name} {1000 * cpu / items:.2f}" for name, cpu in
                     sorted(by_name.items(), key=lambda kv: -kv[1]) if cpu > 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.io_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1, help="queue and DSPy runs, interleaved (the spread)")
    parser.add_argument("--py-spy", dest="py_spy", default="", help="write a raw py-spy profile here (first run)")
    parser.add_argument("--all-samples", action="store_true",
                        help="py-spy samples every running thread, not only the GIL's holder")
    args = parser.parse_args(argv)
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
    with tempfile.TemporaryDirectory(prefix="tidyq-io-profile-") as tmp, Env(Path(tmp)) as env:
        fake = env.fake(0.1)
        worker = env.worker(queues=["predict.direct"], concurrency=1, env=env.direct_env(fake))
        client = Client(env.redis_url)
        warm = client.submit_batch(rows(200, "warm"), SIG, backend="direct", model=MODEL, chunk_size=200)
        assert sum(r["status"] == "succeeded" for r in warm.results(timeout=120)) == 200
        main_pid = worker.pid
        assert main_pid is not None
        pool = next(p for p in group_pids(os.getpgid(main_pid)) if p != main_pid and parent_of(p) == main_pid)
        names = thread_names(pool, exe)
        lm = dspy.LM(MODEL, engine="lm15", api_base=fake.base_url, api_key=API_KEY, cache=False, num_retries=0)
        dspy_seconds(lm, rows(100, "warm-dspy"), 32)
        for run in range(args.repeat):
            spy = None
            if args.py_spy and run == 0:
                spy = subprocess.Popen([exe, "record", "-p", str(pool), "-r", "200", "-o", args.py_spy, "-f", "raw",
                                        "--threads", "--nonblocking", *([] if args.all_samples else ["--gil"])],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            try:
                elapsed, used, threads = queue_run(client, pool, args.items, f"load{run}")
            finally:
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(30)
            print(f"queue: {args.items} items in {elapsed:.2f} s = {args.items / elapsed:.0f}/s; worker pool "
                  f"process CPU {used:.2f} s = {1000 * used / args.items:.2f} ms/item (load {os.getloadavg()[0]:.1f})")
            names = names | thread_names(pool, exe)  # threads started during the run
            print("  by thread (ms/item): " + by_thread_name(threads, names, args.items))
            before = time.process_time()
            seconds = dspy_seconds(lm, rows(1000, f"dspy{run}"), 32)
            used = time.process_time() - before
            print(f"threaded DSPy (32 threads): 1000 items in {seconds:.2f} s = {1000 / seconds:.0f}/s; "
                  f"CPU {used:.2f} s = {used:.2f} ms/item", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
