"""`tidyq demo` as a new user runs it: a clean directory, nothing running, nothing left behind."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

TIDYQ = str(Path(sys.executable).with_name("tidyq"))


def processes_with(marker: str) -> list[int]:
    """Pids whose environment carries ``marker`` (every descendant of the demo inherits it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def demo_env(marker):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDYQ_")}  # a new user's shell
    env["TIDYQ_DEMO_TEST_MARKER"] = marker
    return env


def wait_gone(marker, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and processes_with(marker):
        time.sleep(0.1)
    return processes_with(marker)


def test_demo_runs_to_completion_in_a_clean_directory_and_stops_everything(tmp_path):
    marker = f"tidyq-demo-{uuid.uuid4().hex}"
    res = subprocess.run([TIDYQ, "demo"], cwd=tmp_path, env=demo_env(marker), capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr
    results = [json.loads(line) for line in (tmp_path / "tidyq-demo-results.jsonl").read_text().splitlines()]
    assert len(results) == 300 and len({r["custom_id"] for r in results}) == 300
    assert all(r["status"] == "succeeded" and r["outputs"]["answer"] for r in results)
    metrics = json.loads((tmp_path / "tidyq-demo-metrics.json").read_text())
    assert metrics["items_per_second"] > 0 and metrics["job"]["counts"]["succeeded"] == 300
    assert "300 succeeded, 0 failed" in res.stderr and "items/s" in res.stderr
    assert str(tmp_path / "tidyq-demo-results.jsonl") in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tidyq-demo-metrics.json", "tidyq-demo-results.jsonl"]
    assert wait_gone(marker) == []


def test_demo_interrupted_with_ctrl_c_stops_everything(tmp_path):
    marker = f"tidyq-demo-{uuid.uuid4().hex}"
    proc = subprocess.Popen([TIDYQ, "demo"], cwd=tmp_path, env=demo_env(marker), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(20):  # other commands may print warnings first
            line = proc.stderr.readline()
            if "starting a private redis-server" in line or not line:
                break
        assert "starting a private redis-server" in line
        deadline = time.monotonic() + 30
        while len(processes_with(marker)) < 3 and time.monotonic() < deadline:  # demo, redis, worker
            time.sleep(0.05)
        assert len(processes_with(marker)) >= 3
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # interrupted while the worker was still starting (it takes seconds to import DSPy)
    assert proc.returncode == 130, err
    assert "interrupted; stopped the worker and redis-server" in err and "Traceback" not in err
    assert wait_gone(marker) == []
