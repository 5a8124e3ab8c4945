"""A failing MLflow or Redis call inside an MCP tool or a CLI command is answered in one line with
its cause, and list_programs is reliable on a fresh sqlite store opened by several processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client

from producers.mcp_server import build_server
from shared.causes import describe, one_line, service_of
from shared.config import Settings

TIDYQ = str(Path(sys.executable).with_name("tidyq"))
ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def call(url: str, settings: Settings, tool: str, args: dict):
    async def main():
        async with Client(build_server(redis_url=url, settings=settings)) as client:
            return await client.call_tool(tool, args)

    return anyio.run(main)


def test_list_programs_names_the_mlflow_failure(redis_url):
    uri = f"http://127.0.0.1:{closed_port()}"
    result = call(redis_url, Settings(redis_url=redis_url, mlflow_tracking_uri=uri), "list_programs", {})
    assert result.is_error
    text = result.content[0].text
    assert "\n" not in text and text.startswith("Error executing tool list_programs: the MLflow call failed: ")
    assert "127.0.0.1" in text and "Connection refused" in text  # where it was looked for, and why it failed


def test_a_cli_command_names_the_mlflow_failure_in_one_line(redis_url):
    env = dict(os.environ, TIDYQ_REDIS_URL=redis_url, TIDYQ_MLFLOW_TRACKING_URI=f"http://127.0.0.1:{closed_port()}",
               TIDYQ_MLFLOW_REQUEST_TIMEOUT="2")
    proc = subprocess.run([TIDYQ, "rollout", "qa", "--candidate", "2", "--percent", "10"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("tidyq: the MLflow call failed: ") and "127.0.0.1" in lines[0]
    assert "Connection refused" in lines[0]


def test_causes_are_one_redacted_line():
    import redis

    exc = redis.exceptions.ResponseError("WRONGTYPE Operation against a key\nsecond line")
    assert service_of(exc) == "Redis"
    assert describe(exc) == "the Redis call failed: ResponseError: WRONGTYPE Operation against a key"
    leaky = RuntimeError("cannot open redis://:hunter2-secret@10.0.0.1:6379/0")
    assert "hunter2-secret" not in one_line(leaky)
    assert describe(ValueError("ours")) is None and one_line(ValueError()) == "ValueError"
    try:
        try:
            raise redis.exceptions.TimeoutError("read timed out")
        except redis.exceptions.TimeoutError as inner:
            raise RuntimeError("while listing") from inner
    except RuntimeError as wrapped:
        assert service_of(wrapped) == "Redis"


LIST = """
import os, sys, time
import mlflow, shared.registry  # the slow imports, before the barrier
from producers.mcp_server import registered_programs
from shared.config import Settings
ready = sys.argv[2]
open(os.path.join(ready, str(os.getpid())), "w").close()
give_up = time.monotonic() + 120  # a sibling that died at import must not hang this one
while len(os.listdir(ready)) < int(sys.argv[3]) and time.monotonic() < give_up:  # a barrier: all imported MLflow
    time.sleep(0.005)
print(registered_programs(Settings(mlflow_tracking_uri=sys.argv[1])).model_dump_json())
"""


@pytest.mark.slow
def test_list_programs_on_a_fresh_sqlite_store_from_three_processes_at_once(tmp_path, redis_url):
    """The race MLflow leaves open (its tracking and registry stores migrate a fresh database without
    a lock): three processes start listing at the same instant on a store nobody created yet."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    ready = tmp_path / "ready"  # each process drops a file there once imported; all go when three are in
    ready.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TIDYQ_REDIS_URL=redis_url)
    procs = [subprocess.Popen([sys.executable, "-c", LIST, uri, str(ready), "3"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert '"programs":[]' in out
