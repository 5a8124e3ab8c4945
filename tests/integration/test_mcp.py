"""`tidyq mcp` end to end: the SDK's own MCP Client against our server, a real redis-server and
real `celery -A workers worker` processes (mock backend). In-process sessions, a stdio subprocess
session and the streamable HTTP transport with bearer tokens."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from producers.mcp_server import build_server
from shared.config import Settings

pytestmark = pytest.mark.timeout(180)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"predict", "submit_batch", "job_status", "job_results", "cancel_job", "list_programs", "submit_optimize"}
QA = "question -> answer"


def call(client, name, args, **kw):
    return client.call_tool(name, args, **kw)


async def read_all_results(client, job_id, limit):
    """Page job_results to the end; returns (rows, pages)."""
    rows, pages, cursor = [], 0, None
    for _ in range(1000):
        args = {"job_id": job_id, "limit": limit}
        if cursor:
            args["cursor"] = cursor
        res = await client.call_tool("job_results", args)
        assert not res.is_error, res.content
        page = res.structured_content
        rows += page["results"]
        pages += 1
        if page["done"]:
            assert page["next_cursor"] is None
            return rows, pages
        cursor = page["next_cursor"]
        if not page["results"]:
            await anyio.sleep(0.05)
    raise AssertionError("job_results never reached done")


def test_predict_returns_outputs_and_reports_progress(redis_url, mock_worker):
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async def main():
        async with Client(build_server(redis_url=redis_url)) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert TOOLS <= names
            res = await client.call_tool("predict", {"signature": QA, "inputs": {"question": "What is 2+2?"},
                                                     "backend": "mock", "wait_seconds": 30},
                                         progress_callback=on_progress)
            assert not res.is_error, res.content
            out = res.structured_content
            assert out["done"] is True and out["status"] == "completed"
            assert isinstance(out["outputs"]["answer"], str) and out["outputs"]["answer"]
            assert out["error"] is None
            # the job is real: its status and result are readable through the other tools
            st = (await client.call_tool("job_status", {"job_id": out["job_id"]})).structured_content
            assert st["kind"] == "predict" and st["counts"] == {"total": 1, "succeeded": 1, "failed": 0}
            return out

    anyio.run(main)
    assert progress, "no progress notification reached the client"
    assert progress[0][:2] == (0, 1) and progress[-1][:2] == (1, 1)
    assert all("job " in (m or "") for _, _, m in progress)


def test_batch_of_200_rows_paged_to_the_end(redis_url, start_worker):
    start_worker(concurrency=2, env={"TIDYQ_CHUNK_SIZE": "20"})
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total))

    async def main():
        rows = [{"custom_id": f"q{i:03d}", "inputs": {"question": f"What is {i} + {i}?"}} for i in range(200)]
        async with Client(build_server(redis_url=redis_url)) as client:
            res = await client.call_tool("submit_batch", {"signature": QA, "rows": rows, "backend": "mock",
                                                          "chunk_size": 20})
            assert not res.is_error, res.content
            sub = res.structured_content
            assert sub["kind"] == "batch" and sub["counts"]["total"] == 200 and not sub["existing"]
            job_id = sub["job_id"]
            st = await client.call_tool("job_status", {"job_id": job_id, "wait_seconds": 40},
                                        progress_callback=on_progress)
            assert st.structured_content["done"] and st.structured_content["status"] == "completed"
            got, pages = await read_all_results(client, job_id, limit=37)
            return got, pages

    got, pages = anyio.run(main)
    ids = [r["custom_id"] for r in got]
    assert len(ids) == 200 and set(ids) == {f"q{i:03d}" for i in range(200)}
    assert all(r["status"] == "succeeded" and r["outputs"]["answer"] for r in got)
    assert pages == 6  # 5 full pages of 37 and one of 15
    values = [v for v, _ in progress]
    assert values == sorted(values) and len(set(values)) == len(values), "progress must only increase"
    assert progress[-1] == (200, 200)


def test_wait_is_capped_then_job_id_is_handed_back_and_cancel_works(redis_url, start_worker):
    # the worker serves only predict.mock: a job for the direct backend stays queued, so the
    # capped wait must end and hand back the job id instead of failing or blocking
    start_worker(queues=["predict.mock"])
    settings = Settings(mcp_max_wait_seconds=1.0)

    async def main():
        async with Client(build_server(redis_url=redis_url, settings=settings)) as client:
            started = time.monotonic()
            res = await client.call_tool("predict", {"signature": QA, "inputs": {"question": "slow?"},
                                                     "backend": "direct", "model": "openai/gpt-4o-mini",
                                                     "wait_seconds": 45})
            waited = time.monotonic() - started
            assert not res.is_error, res.content
            out = res.structured_content
            assert out["done"] is False and out["status"] == "queued" and out["outputs"] is None
            assert out["job_id"] in out["next_step"] and "job_status" in out["next_step"]
            assert waited < 15, f"the 1 s cap was not applied ({waited:.1f} s)"

            rows = [{"inputs": {"question": str(i)}} for i in range(5)]
            batch = await client.call_tool("submit_batch", {"signature": QA, "backend": "direct", "rows": rows})
            job_id = batch.structured_content["job_id"]
            cancelled = await client.call_tool("cancel_job", {"job_id": job_id})
            assert not cancelled.is_error, cancelled.content
            assert cancelled.structured_content["status"] == "cancelled"
            page = (await client.call_tool("job_results", {"job_id": job_id})).structured_content
            assert page["done"] and page["results"] == [] and page["status"] == "cancelled"
            again = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
            assert again["status"] == "cancelled" and "already ended" in again["note"]
            # the predict job handed back above can be cancelled too
            cancelled = await client.call_tool("cancel_job", {"job_id": out["job_id"]})
            assert cancelled.structured_content["status"] == "cancelled"

    anyio.run(main)


def test_cancel_a_running_batch_keeps_finished_results(redis_url, start_worker, openai_fake):
    # a stand-in OpenAI provider answering in 0.1 s keeps the job running long enough to cancel it
    openai_fake.set_latency(0.1)
    start_worker(queues=["predict.direct"], concurrency=1,
                 env={"TIDYQ_API_BASE": openai_fake.base_url, "TIDYQ_API_KEY": "sk-test-not-a-secret",
                      "TIDYQ_MODEL": "openai/gpt-4o-mini", "TIDYQ_CACHE_ENABLED": "false",
                      "TIDYQ_CONCURRENCY_DIRECT": "2"})

    async def main():
        rows = [{"inputs": {"question": f"q{i}"}} for i in range(200)]
        async with Client(build_server(redis_url=redis_url)) as client:
            args = {"signature": QA, "rows": rows, "backend": "direct", "model": "openai/gpt-4o-mini", "chunk_size": 5}
            sub = (await client.call_tool("submit_batch", args)).structured_content
            job_id = sub["job_id"]
            with anyio.fail_after(60):
                while True:  # until the first results are in
                    st = (await client.call_tool("job_status", {"job_id": job_id})).structured_content
                    if st["counts"]["succeeded"] >= 1:
                        break
                    await anyio.sleep(0.05)
            res = (await client.call_tool("cancel_job", {"job_id": job_id})).structured_content
            assert res["status"] in ("cancelling", "cancelled"), res
            st = (await client.call_tool("job_status", {"job_id": job_id, "wait_seconds": 30})).structured_content
            assert st["done"] and st["status"] == "cancelled"
            got, _ = await read_all_results(client, job_id, limit=1000)
            return st, got

    st, got = anyio.run(main)
    done = st["counts"]["succeeded"] + st["counts"]["failed"]
    assert 1 <= done < 200, "the cancel did not stop the pending items"
    assert len(got) == done and len({r["custom_id"] for r in got}) == done
    assert all(r["status"] == "succeeded" and r["outputs"]["answer"] for r in got)


def test_stdio_subprocess_session(redis_url, mock_worker, tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(f'{{"custom_id": "r{i}", "inputs": {{"question": "{i}?"}}}}\n'
                                               for i in range(12)))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", "import sys; from producers.cli import main; sys.exit(main())", "mcp", "--root", str(tmp_path)],
        env={"TIDYQ_REDIS_URL": redis_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(PROJECT_ROOT)},
        cwd=str(PROJECT_ROOT))

    async def main():
        with anyio.fail_after(90):
            async with Client(params) as client:
                assert TOOLS <= {t.name for t in (await client.list_tools()).tools}
                res = await client.call_tool("predict",
                                             {"signature": QA, "inputs": {"question": "hi"}, "backend": "mock"})
                assert not res.is_error, res.content
                assert res.structured_content["outputs"]["answer"]
                sub = await client.call_tool("submit_batch", {"signature": QA, "path": "in.jsonl", "backend": "mock",
                                                              "wait_seconds": 30})
                assert not sub.is_error, sub.content
                assert sub.structured_content["done"]
                got, _ = await read_all_results(client, sub.structured_content["job_id"], limit=5)
                assert sorted(r["custom_id"] for r in got) == sorted(f"r{i}" for i in range(12))
                bad = await client.call_tool("job_status", {"job_id": "nope"})
                assert bad.is_error and "no job 'nope'" in bad.content[0].text

    anyio.run(main)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server(redis_url, tmp_path):
    """`tidyq mcp --http` as a subprocess with two static tokens; stopped with its group."""
    tokens = ["tok-" + "a" * 28, "tok-" + "b" * 28]
    port = _free_port()
    log = tmp_path / "mcp-http.log"
    env = dict(os.environ, TIDYQ_REDIS_URL=redis_url, TIDYQ_MCP_TOKENS=",".join(tokens),
               LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(PROJECT_ROOT))
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from producers.cli import main; sys.exit(main())",
                                 "mcp", "--http", f"127.0.0.1:{port}", "--log-level", "INFO"],
                                env=env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server did not start:\n" + log.read_text()
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", tokens, log
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_http_refuses_missing_or_wrong_token_and_serves_a_good_one(http_server, mock_worker):
    url, tokens, log = http_server
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    wrong = "tok-" + "c" * 28
    with httpx2.Client(timeout=10) as http:
        missing = http.post(url, json=init, headers=headers)
        assert missing.status_code == 401 and "Bearer" in missing.headers["www-authenticate"]
        bad = http.post(url, json=init, headers={**headers, "Authorization": f"Bearer {wrong}"})
        assert bad.status_code == 401
        basic = http.post(url, json=init, headers={**headers, "Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401

    async def main():
        for token in tokens:
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    assert TOOLS <= {t.name for t in (await client.list_tools()).tools}
                    res = await client.call_tool("predict", {"signature": QA, "inputs": {"question": "over http"},
                                                             "backend": "mock"})
                    assert not res.is_error, res.content
                    assert res.structured_content["outputs"]["answer"]

    anyio.run(main)
    text = log.read_text()
    for secret in (*tokens, wrong):
        assert secret not in text, "a bearer token was written to the server's log"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_embedded_stdio_session_as_a_new_user_and_everything_stops(tmp_path, monkeypatch):
    """The README's try-out: `tidyq mcp --embedded` with nothing running; a batch goes through
    and every result is read back; closing the session stops the worker and redis-server."""
    import re

    from mcp.client.stdio import stdio_client

    errlog = tmp_path / "server-stderr.log"
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(PROJECT_ROOT), "TIDYQ_BACKEND": "mock"}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", "import sys; from producers.cli import main; sys.exit(main())", "mcp", "--embedded"],
        env=env, cwd=str(tmp_path))

    async def main():
        with open(errlog, "w") as log, anyio.fail_after(120):
            async with Client(stdio_client(params, errlog=log)) as client:
                rows = [{"custom_id": f"c{i}", "inputs": {"question": f"{i}?"}} for i in range(50)]
                sub = await client.call_tool("submit_batch", {"signature": QA, "rows": rows, "wait_seconds": 40})
                assert not sub.is_error, sub.content
                assert sub.structured_content["done"] and sub.structured_content["counts"]["succeeded"] == 50
                got, _ = await read_all_results(client, sub.structured_content["job_id"], limit=20)
                assert sorted(r["custom_id"] for r in got) == sorted(r["custom_id"] for r in rows)

    anyio.run(main)
    text = errlog.read_text()
    port = int(re.search(r"redis://127\.0\.0\.1:(\d+)", text).group(1))
    worker_pid = int(re.search(r"pid (\d+)", text).group(1))
    deadline = time.monotonic() + 15
    while not _gone(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker_pid), "the embedded worker outlived the MCP session"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
