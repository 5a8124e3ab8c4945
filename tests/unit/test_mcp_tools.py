"""The MCP tools' refusals, through the SDK's in-process Client against a real redis-server (no
worker needed: every case is refused, or only enqueued, before any worker would run it).
A refusal must be a tool error naming what to fix, nothing may be half-enqueued, and the server
must keep serving afterwards."""

import os

import anyio
import pytest
import redis
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError

from producers.mcp_server import build_server, decode_cursor, encode_cursor, resolve_under_root

QA = "question -> answer"
pytestmark = pytest.mark.timeout(60)


def _job_keys(url):
    client = redis.Redis.from_url(url)
    try:
        return [k for k in client.keys("tidyq:job:*")]
    finally:
        client.close()


def _calls(url, calls, **server_kw):
    """Run (tool, args) calls in one session; returns their CallToolResults."""

    async def main():
        async with Client(build_server(redis_url=url, **server_kw)) as client:
            out = [await client.call_tool(name, args) for name, args in calls]
            # still serving after every refusal
            assert {t.name for t in (await client.list_tools()).tools} >= {"predict", "job_results"}
            return out

    return anyio.run(main)


def _error_text(result) -> str:
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    return result.content[0].text


@pytest.mark.parametrize("tool,args,expect", [
    ("predict", {"signature": "question answer", "inputs": {"question": "x"}, "backend": "mock"}, "bad signature"),
    ("predict", {"signature": QA, "inputs": {"q": "x"}, "backend": "mock"}, "unknown input field 'q'"),
    ("predict", {"signature": QA, "inputs": {}, "backend": "mock"}, "missing input field 'question'"),
    ("predict", {"inputs": {"question": "x"}, "backend": "mock"}, "signature"),
    ("predict", {"signature": QA, "program": "models:/qa/1", "inputs": {"question": "x"}}, "not both"),
    ("predict", {"signature": QA, "inputs": {"question": "x"}, "backend": "nosuch"}, "unknown backend 'nosuch'"),
    ("predict", {"signature": QA, "backend": "mock"}, "inputs"),  # schema: required field
    ("predict", {"signature": QA, "inputs": "x", "backend": "mock"}, "inputs"),  # schema: wrong type
    ("predict", {"signature": QA, "inputs": {"question": "x"}, "wait_seconds": -1}, "wait_seconds"),
    ("submit_batch", {"signature": QA, "backend": "mock"}, "exactly one of rows"),
    ("submit_batch", {"signature": QA, "backend": "mock", "rows": []}, "no items"),
    ("submit_batch", {"signature": QA, "backend": "mock",
                      "rows": [{"inputs": {"question": "a"}}, {"inputs": {"nope": 1}}]},
     "rows[1]"),
    ("submit_batch", {"signature": QA, "backend": "mock", "rows": [{"custom_id": "a", "inputs": {"question": "1"}},
                                                                     {"custom_id": "a", "inputs": {"question": "2"}}]},
     "duplicate custom_id 'a'"),
    ("submit_batch", {"signature": QA, "backend": "mock", "rows": [{"inputs": {"question": "a"}, "extra": 1}]},
     "extra"),
    ("job_status", {"job_id": "0" * 32}, "no job '" + "0" * 32 + "'"),
    ("job_results", {"job_id": "nope"}, "no job 'nope'"),
    ("job_results", {"job_id": "nope", "limit": 0}, "limit"),
    ("job_results", {"job_id": "nope", "cursor": "!!!"}, "cursor"),
    ("cancel_job", {"job_id": "nope"}, "no job 'nope'"),
    ("submit_optimize", {"name": "qa", "signature": QA}, "exactly one of trainset"),
    ("no_such_tool", {}, "no_such_tool"),
])
def test_bad_input_is_a_tool_error_and_nothing_is_enqueued(redis_url, tool, args, expect):
    (result,) = _calls(redis_url, [(tool, args)])
    assert expect in _error_text(result)
    assert _job_keys(redis_url) == []


def test_cursor_of_another_job_is_refused(redis_url):
    rows = [{"inputs": {"question": str(i)}} for i in range(3)]
    # backend direct: enqueued on predict.direct, which no worker serves here
    first, second = _calls(redis_url, [("submit_batch", {"signature": QA, "backend": "direct", "rows": rows})] * 2)
    a, b = first.structured_content["job_id"], second.structured_content["job_id"]
    page, foreign = _calls(redis_url, [("job_results", {"job_id": a, "limit": 1}),
                                       ("job_results", {"job_id": b, "cursor": encode_cursor(a, 0)})])
    assert not page.is_error and page.structured_content["results"] == []
    assert page.structured_content["done"] is False and page.structured_content["next_cursor"]
    assert "not a cursor of this job" in _error_text(foreign)


def test_cursor_round_trip():
    assert decode_cursor(encode_cursor("abc", 37), "abc") == 37
    with pytest.raises(ToolError):
        decode_cursor(encode_cursor("abc", 37), "abd")
    with pytest.raises(ToolError):
        decode_cursor("bm9wZQ", "abc")  # "nope": no offset


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.jsonl").write_text('{"inputs": {"question": "1"}}\n{"inputs": {"question": "2"}}\n')
    (tmp_path / "outside.jsonl").write_text('{"inputs": {"question": "secret"}}\n')
    os.symlink(tmp_path / "outside.jsonl", root / "link.jsonl")
    os.symlink(tmp_path, root / "up")
    return root


@pytest.mark.parametrize("path", ["../outside.jsonl", "{tmp}/outside.jsonl", "link.jsonl", "up/outside.jsonl",
                                  "sub/../../outside.jsonl", "/etc/passwd", "~/.bashrc"])
def test_path_outside_the_root_is_refused(redis_url, tree, path):
    path = path.replace("{tmp}", str(tree.parent))
    (result,) = _calls(redis_url, [("submit_batch", {"signature": QA, "backend": "mock", "path": path})],
                       root=str(tree))
    assert "outside the server's root directory" in _error_text(result)
    assert _job_keys(redis_url) == []


def test_path_under_the_root_is_submitted(redis_url, tree):
    relative, absolute = _calls(redis_url, [
        ("submit_batch", {"signature": QA, "backend": "direct", "path": "sub/ok.jsonl"}),
        ("submit_batch", {"signature": QA, "backend": "direct", "path": str(tree / "sub" / "ok.jsonl")}),
    ], root=str(tree))
    for result in (relative, absolute):
        assert not result.is_error, result.content
        assert result.structured_content["counts"]["total"] == 2
        assert result.structured_content["status"] == "queued" and not result.structured_content["done"]


def test_paths_are_refused_without_a_root(redis_url, tree, monkeypatch):
    monkeypatch.delenv("TIDYQ_MCP_ROOT", raising=False)
    (result,) = _calls(redis_url, [("submit_batch", {"signature": QA, "backend": "mock", "path": "sub/ok.jsonl"})])
    assert "no root directory configured" in _error_text(result)


def test_missing_file_and_bad_line_under_the_root(redis_url, tree):
    (tree / "bad.jsonl").write_text('{"inputs": {"question": "1"}}\n{"inputs": {"q": "2"}}\n')
    missing, bad = _calls(redis_url, [("submit_batch", {"signature": QA, "backend": "mock", "path": "nope.jsonl"}),
                                      ("submit_batch", {"signature": QA, "backend": "mock", "path": "bad.jsonl"})],
                          root=str(tree))
    assert "is not a file" in _error_text(missing)
    text = _error_text(bad)
    assert "bad.jsonl:2" in text and "'q'" in text
    assert _job_keys(redis_url) == []


def test_resolve_under_root_unit(tree):
    assert resolve_under_root("sub/ok.jsonl", str(tree)) == (tree / "sub" / "ok.jsonl").resolve()
    with pytest.raises(ToolError):
        resolve_under_root("sub", str(tree))  # a directory


def test_redis_down_is_a_tool_error():
    (result,) = _calls("redis://127.0.0.1:1/0", [("job_status", {"job_id": "x"})])
    assert "cannot reach the queue's Redis" in _error_text(result)


def test_list_programs_without_a_registry(redis_url, monkeypatch):
    monkeypatch.delenv("TIDYQ_MLFLOW_TRACKING_URI", raising=False)
    (result,) = _calls(redis_url, [("list_programs", {})])
    assert not result.is_error
    assert result.structured_content["programs"] == []
    assert "TIDYQ_MLFLOW_TRACKING_URI" in result.structured_content["note"]


def test_job_states_map_onto_mcp_task_states():
    from producers.mcp_server import job_to_task

    base = {"id": "j1", "counts": {"total": 4, "succeeded": 2, "failed": 1}, "expires_in_seconds": 60,
            "timestamps": {"created": "2025-01-01T00:00:00.000+00:00", "started": "2025-01-01T00:00:01.000+00:00",
                           "finished": None}}
    expected = {"queued": "working", "running": "working", "cancelling": "working", "completed": "completed",
                "failed": "failed", "cancelled": "cancelled"}
    for job_state, task_state in expected.items():
        task = job_to_task({**base, "status": job_state})
        assert task.task_id == "j1" and task.status == task_state
        assert task.ttl == 60_000 and "3/4 items done (1 failed)" in task.status_message
        assert task.last_updated_at == base["timestamps"]["started"]


def test_predict_and_submit_batch_carry_the_item_cache_opt_out_into_the_job(redis_url):
    from shared.store import JobStore

    rows = [{"custom_id": "a", "inputs": {"question": "x"}}]
    results = _calls(redis_url, [
        ("predict", {"signature": QA, "inputs": {"question": "x"}, "backend": "direct", "wait_seconds": 0,
                     "item_cache": False}),
        ("predict", {"signature": QA, "inputs": {"question": "y"}, "backend": "direct", "wait_seconds": 0}),
        ("submit_batch", {"signature": QA, "backend": "direct", "rows": rows, "item_cache": False}),
        ("submit_batch", {"signature": QA, "backend": "direct", "rows": rows}),
    ])
    store = JobStore.from_url(redis_url)
    flags = []
    for result in results:
        assert not result.is_error, result.content
        flags.append(store.spec(result.structured_content["job_id"]).item_cache)
    assert flags == [False, True, False, True]
