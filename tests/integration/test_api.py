"""The REST API as a service in another language would use it: a real `python -m producers.api` process,
plain HTTP (httpx), the OpenAPI document, a real redis-server and real workers."""

import json
import subprocess
import sys

import httpx
import jsonschema
import pytest
import redis

from producers import Client
from producers.api.process import ApiServerProcess
from shared import keys
from tests.optimize_support import mlflow_template, mlflow_uri  # noqa: F401  (fixtures)
from tests.user_programs_support import USER_CODE

TOKEN = "api-token-0123456789abcdef"
TENANT_A = "tenant-a-token-0123456789"
TENANT_B = "tenant-b-token-0123456789"
SIG = "question -> answer"


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(redis_url, tmp_path):
    env = {"TIDYQ_REDIS_URL": redis_url, "TIDYQ_API_TOKENS": f"{TOKEN},alpha={TENANT_A},beta={TENANT_B}",
           "TIDYQ_WEBHOOK_SECRET": "whsec-test-0123456789", "TIDYQ_WEBHOOK_ALLOW_PRIVATE": "true",
           "TIDYQ_API_JSON_MAX_BYTES": "200000"}
    server = ApiServerProcess(env, log_path=tmp_path / "api.log").start()
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def validator(doc, schema):
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def check_response(doc, op, response):
    """The status code is documented for the operation and the body matches its schema."""
    documented = op["responses"]
    assert str(response.status_code) in documented, (op["operationId"], response.status_code, response.text)
    content = documented[str(response.status_code)].get("content", {})
    media = response.headers.get("content-type", "").split(";")[0]
    if media in content and content[media].get("schema") and media.endswith("json"):
        validator(doc, content[media]["schema"]).validate(response.json())
    elif response.status_code != 204:
        assert media in content, (op["operationId"], media)


def test_the_api_walked_from_its_own_openapi_document(api, mock_worker):
    doc = httpx.get(f"{api.url}/openapi.json").json()
    assert doc["servers"] == [{"url": "/api/v1"}] and doc["openapi"].startswith("3.1")
    seen = set()
    job_id = None
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("example")
            url = api.url + path.replace("{job_id}", job_id or "x").replace("{name}", "qa") \
                .replace("{target}", "x")
            query = {"wait": 30} if op["operationId"] == "submitJob" else {}
            response = httpx.request(method, url, json=body, params=query, headers=auth(), timeout=60)
            check_response(doc, op, response)
            if op["operationId"] == "submitJob":
                job_id = response.json()["id"]
                assert response.status_code == 201 and response.json()["outputs"]["answer"]
                assert response.headers["location"] == f"/api/v1/jobs/{job_id}"
            if op.get("security", doc["security"]):  # every operation but the document needs a token
                refused = httpx.request(method, url, json=body)
                assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
                check_response(doc, op, refused)
                assert refused.headers["content-type"] == "application/problem+json"
                wrong = httpx.request(method, url, json=body, headers=auth("not-a-valid-token-at-all"))
                assert wrong.status_code == 401
            for param in op.get("parameters", []):  # every numeric query parameter refuses a non-number
                if param["in"] == "query" and param["schema"].get("type") in ("integer", "number") and \
                        (op["operationId"] != "submitJob" or param["name"] == "wait"):
                    bad = httpx.request(method, url, json=body, params={param["name"]: "abc"}, headers=auth())
                    check_response(doc, op, bad)
                    assert bad.status_code == 422 and bad.json()["field"] == f"query parameter '{param['name']}'"
            seen.add(op["operationId"])
    assert seen == {"submitJob", "listJobs", "getJob", "getResults", "cancelJob", "retryJob", "listPrograms",
                    "openapi", "estimateBatch", "registerProgram", "getRollout", "startRollout", "rollback",
                    "promote", "getQueues", "getBreakers", "resetBreaker", "getBudget"}
    # unknown endpoints and methods are problems too
    missing = httpx.get(f"{api.url}/nope", headers=auth())
    assert missing.status_code == 404 and missing.json()["type"].endswith("not-found")
    assert httpx.delete(f"{api.url}/jobs", headers=auth()).status_code == 405


def test_predict_with_wait_answers_the_cli_status_shape_plus_outputs(api, mock_worker):
    r = httpx.post(f"{api.url}/jobs?wait=30", headers=auth(), timeout=60,
                   json={"signature": SIG, "backend": "mock", "inputs": {"question": "What is 2+2?"}})
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["status"] == "completed" and view["outputs"]["answer"].endswith("(What is 2+2?)")
    cli = Client().job(view["id"]).status()  # what `tidyq status` prints
    assert {k: v for k, v in view.items() if k not in ("outputs", "output_error", "expires_in_seconds")} == \
        {k: v for k, v in cli.items() if k != "expires_in_seconds"}
    got = httpx.get(f"{api.url}/jobs/{view['id']}", headers=auth()).json()
    assert got["counts"] == {"total": 1, "succeeded": 1, "failed": 0}


def test_batch_results_paged_and_streamed_then_cancel_retry_list(api, mock_worker):
    rows = [{"custom_id": f"r{i}", "inputs": {"question": f"q{i}?"}} for i in range(25)]
    r = httpx.post(f"{api.url}/jobs", params={"wait": 30}, headers=auth(), timeout=60,
                   json={"signature": SIG, "backend": "mock", "rows": rows, "chunk_size": 5})
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    job_id = r.json()["id"]
    pages, offset = [], 0
    while True:
        page = httpx.get(f"{api.url}/jobs/{job_id}/results", params={"offset": offset, "limit": 10},
                         headers=auth()).json()
        pages.append(page["results"])
        offset = page["next_offset"]
        if page["done"]:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    streamed = httpx.get(f"{api.url}/jobs/{job_id}/results", headers={**auth(), "Accept": "application/x-ndjson"})
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(x["custom_id"] for p in pages for x in p)
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(25))
    assert httpx.post(f"{api.url}/jobs/{job_id}/retry", headers=auth()).status_code == 204  # nothing failed
    assert httpx.post(f"{api.url}/jobs/{job_id}/cancel", headers=auth()).json() == {"id": job_id,
                                                                                    "status": "completed"}
    listed = httpx.get(f"{api.url}/jobs", params={"status": "completed", "kind": "batch"}, headers=auth()).json()
    assert [j["id"] for j in listed["jobs"]] == [job_id]


def test_jsonl_upload_is_streamed_and_bad_lines_are_named(api, mock_worker, redis_url):
    lines = "".join(json.dumps({"custom_id": f"u{i}", "inputs": {"question": f"up {i}"}}) + "\n" for i in range(300))
    r = httpx.post(f"{api.url}/jobs", params={"signature": SIG, "backend": "mock", "wait": 60},
                   content=lines.encode(), headers={**auth(), "Content-Type": "application/x-ndjson"}, timeout=90)
    assert r.status_code == 201, r.text
    assert r.json()["counts"] == {"total": 300, "succeeded": 300, "failed": 0}
    before = redis.Redis.from_url(redis_url).zcard(keys.jobs_index())
    bad = '{"inputs": {"question": "ok"}}\n{"inputs": {"question": "ok"}}\n{"inputs": {"quest": "typo"}}\n'
    r = httpx.post(f"{api.url}/jobs", params={"signature": SIG, "backend": "mock"}, content=bad.encode(),
                   headers={**auth(), "Content-Type": "application/jsonl"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["field"] == "body:3: field 'inputs.quest'" and "unknown input field 'quest'" in r.json()["detail"]
    assert "tidyq-upload" not in r.text  # the server's temporary file is never named
    assert redis.Redis.from_url(redis_url).zcard(keys.jobs_index()) == before  # nothing half-enqueued


@pytest.mark.parametrize("body, params, field, status", [
    ({"signature": SIG, "backend": "mock", "inputs": {"question": "x"}, "colour": 1}, {}, "colour", 422),
    ({"signature": SIG, "backend": "mock", "inputs": {"other": "x"}}, {}, "inputs: field 'inputs.other'", 422),
    ({"signature": "no arrow", "backend": "mock", "inputs": {"q": "x"}}, {}, "signature", 422),
    ({"signature": SIG, "backend": "nope", "inputs": {"question": "x"}}, {}, "backend", 422),
    ({"signature": SIG, "backend": "mock", "fallbacks": ["zzz:m"], "inputs": {"question": "x"}}, {},
     "fallback 'zzz:m'", 422),
    ({"signature": SIG, "backend": "mock"}, {}, "inputs", 422),
    ({"signature": SIG, "backend": "mock", "rows": [{"custom_id": "a", "inputs": {"question": "x"}}, 7]}, {},
     "rows[1]", 422),
    ({"signature": SIG, "backend": "mock", "inputs": {"question": "x"}}, {"wait": "soon"}, "query parameter 'wait'",
     422),
    ({"signature": SIG, "backend": "mock", "inputs": {"question": "x"}}, {"wait": "9999"}, "query parameter 'wait'",
     422),
    ({"signature": SIG, "backend": "mock", "inputs": {"question": "x"}, "webhook_url": "ftp://example.com/x"}, {},
     "webhook_url", 422),
    ({"signature": SIG, "backend": "mock", "chunk_size": 0, "rows": []}, {}, "chunk_size", 422),
])
def test_bad_requests_are_problems_naming_the_field(api, redis_url, body, params, field, status):
    r = httpx.post(f"{api.url}/jobs", json=body, params=params, headers=auth())
    assert r.status_code == status, r.text
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["field"] == field and problem["status"] == status and problem["detail"]
    assert problem["type"].startswith("https://tidyq.dev/problems/")
    assert redis.Redis.from_url(redis_url).zcard(keys.jobs_index()) == 0


def test_malformed_bodies_and_media_types(api):
    big = b'{"rows": [' + b'{"inputs": {"question": "x"}},' * 8000 + b"{}]}"  # over the server's 200 kB
    r = httpx.post(f"{api.url}/jobs", content=big, headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body" and "JSONL" in r.json()["detail"]
    r = httpx.post(f"{api.url}/jobs", content=b"{not json", headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = httpx.post(f"{api.url}/jobs", content=b"x", headers={**auth(), "Content-Type": "text/csv"})
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    r = httpx.get(f"{api.url}/jobs", params={"status": "sleeping"}, headers=auth())
    assert r.status_code == 422 and r.json()["field"] == "query parameter 'status'"
    r = httpx.get(f"{api.url}/jobs/0000/results", headers=auth())
    assert r.status_code == 404 and r.json()["field"] == "job"


def test_a_tenant_token_sees_only_its_tenants_jobs(api, redis_url):
    body = {"signature": SIG, "backend": "mock", "inputs": {"question": "mine"}, "idempotency_key": "same"}
    a = httpx.post(f"{api.url}/jobs", json=body, headers=auth(TENANT_A)).json()
    b = httpx.post(f"{api.url}/jobs", json=body, headers=auth(TENANT_B)).json()
    assert a["tenant"] == "alpha" and b["tenant"] == "beta" and a["id"] != b["id"]  # keys are per tenant
    again = httpx.post(f"{api.url}/jobs", json=body, headers=auth(TENANT_A))
    assert again.status_code == 200 and again.json()["id"] == a["id"]
    assert httpx.get(f"{api.url}/jobs/{a['id']}", headers=auth(TENANT_B)).status_code == 404
    assert httpx.post(f"{api.url}/jobs/{a['id']}/cancel", headers=auth(TENANT_B)).status_code == 404
    assert [j["id"] for j in httpx.get(f"{api.url}/jobs", headers=auth(TENANT_B)).json()["jobs"]] == [b["id"]]
    assert {j["id"] for j in httpx.get(f"{api.url}/jobs", headers=auth()).json()["jobs"]} == {a["id"], b["id"]}
    assert httpx.post(f"{api.url}/jobs/{a['id']}/cancel", headers=auth(TENANT_A)).json()["status"] == "cancelled"


def test_the_runner_refuses_to_start_without_tokens(redis_url):
    env = {"TIDYQ_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    for tokens in (None, "tok9xq"):
        run_env = env | ({"TIDYQ_API_TOKENS": tokens} if tokens else {})
        done = subprocess.run([sys.executable, "-m", "producers.api", "--port", "1"], env=run_env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "TIDYQ_API_TOKENS" in done.stderr and "Traceback" not in done.stderr
        assert tokens is None or tokens not in done.stderr


def test_optimize_jobs_are_submitted_and_checked_like_the_cli(api):
    train = [{"inputs": {"question": f"{i}+{i}?"}, "outputs": {"answer": str(2 * i)}} for i in range(4)]
    body = {"signature": SIG, "backend": "mock", "optimize": {"name": "qa-api", "trainset": train}}
    r = httpx.post(f"{api.url}/jobs", json=body, headers=auth(TENANT_A))
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "optimize" and r.json()["status"] == "queued" and r.json()["tenant"] == "alpha"
    for change, field in [({"optimizer": "nope"}, "optimize.optimizer"),
                          ({"settings": {"zzz": 1}}, "optimize.settings.zzz"),
                          ({"trainset": [{"inputs": {"question": "x"}}]}, "optimize.trainset"),
                          ({"kind": "tree"}, "optimize.kind")]:
        bad = httpx.post(f"{api.url}/jobs", json={**body, "optimize": {**body["optimize"], **change}}, headers=auth())
        assert bad.status_code == 422 and bad.json()["field"].startswith(field), (change, bad.text)


@pytest.fixture
def registry_api(redis_url, tmp_path, mlflow_uri):
    """The API server with a real sqlite MLflow registry and the user's package (tests/user_code) allowed."""
    env = {"TIDYQ_REDIS_URL": redis_url, "TIDYQ_API_TOKENS": f"{TOKEN},alpha={TENANT_A}",
           "TIDYQ_MLFLOW_TRACKING_URI": mlflow_uri, "TIDYQ_PROGRAM_PACKAGES": "userprogs",
           "PYTHONPATH": str(USER_CODE)}
    server = ApiServerProcess(env, log_path=tmp_path / "api.log").start()
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_register_rollout_rollback_promote_like_the_cli(registry_api):
    url = registry_api.url
    body = {"program": "userprogs.multihop:MultiHop", "name": "hops"}
    first = httpx.post(f"{url}/programs", json=body, headers=auth(), timeout=120)
    assert first.status_code == 201, first.text
    assert first.json() == {"uri": "models:/hops/1", "name": "hops", "version": 1}
    assert httpx.post(f"{url}/programs", json=body, headers=auth(), timeout=120).json()["version"] == 2
    listed = httpx.get(f"{url}/programs", headers=auth(TENANT_A), timeout=60).json()["programs"]
    assert [(p["name"], p["versions"]) for p in listed] == [("hops", [1, 2])]
    for bad, field, status, words in [
        ({"program": "userprogs/multihop.py:MultiHop", "name": "hops"}, "program", 422, "no code upload"),
        ({"program": "os.path:join", "name": "hops"}, "", 503, "TIDYQ_PROGRAM_PACKAGES"),  # as POST /jobs says
        ({"program": "userprogs.multihop:Nope", "name": "hops"}, "program", 422, "Nope"),
        ({"program": "userprogs.multihop:MultiHop", "name": "bad name!"}, "name", 422, ""),
        ({"program": "userprogs.multihop:MultiHop"}, "name", 422, ""),
    ]:
        r = httpx.post(f"{url}/programs", json=bad, headers=auth(), timeout=60)
        problem = r.json()
        assert r.status_code == status and problem.get("field", "").startswith(field), (bad, r.text)
        assert words in problem["detail"], (bad, r.text)
    # a tenant's token cannot change what every tenant's jobs are served by
    for path, payload in [("/programs", body), ("/programs/hops/rollout", {"candidate": 2, "percent": 10}),
                          ("/programs/hops/rollback", None), ("/programs/hops/promote", None)]:
        r = httpx.post(url + path, json=payload, headers=auth(TENANT_A), timeout=60)
        assert r.status_code == 403 and r.json()["field"] == "Authorization", (path, r.text)

    r = httpx.post(f"{url}/programs/hops/rollout", json={"candidate": 2, "percent": 25}, headers=auth(), timeout=60)
    assert r.status_code == 200 and r.json() == {"live": 1, "candidate": 2, "percent": 25.0, "warning": None}, r.text
    status = httpx.get(f"{url}/programs/hops/rollout", headers=auth(TENANT_A), timeout=60).json()
    assert (status["name"], status["live"], status["candidate"], status["percent"]) == ("hops", 1, 2, 25.0)
    assert httpx.get(f"{url}/programs/nobody/rollout", headers=auth(), timeout=60).status_code == 404
    assert httpx.get(f"{url}/programs/bad name!/rollout", headers=auth(), timeout=60).json()["field"] == "name"
    from shared.config import Settings
    from shared.registry import Registry

    assert Registry(Settings()).rollout_state("hops").as_dict() == {"live": 1, "candidate": 2, "percent": 25.0}
    for path, payload, field, code in [
        ("/programs/hops/rollout", {"candidate": 9, "percent": 10}, "candidate", 422),
        ("/programs/hops/rollout", {"candidate": 1, "percent": 10}, "candidate", 422),  # already live
        ("/programs/hops/rollout", {"candidate": 2, "percent": 150}, "percent", 422),
        ("/programs/hops/rollout", {"candidate": 2}, "percent", 422),
        ("/programs/nobody/rollout", {"candidate": 2, "percent": 10}, "name", 404),
        ("/programs/nobody/promote", None, "name", 404),
    ]:
        r = httpx.post(url + path, json=payload, headers=auth(), timeout=60)
        assert r.status_code == code and r.json()["field"] == field, (path, payload, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = httpx.post(f"{url}/programs/hops/rollback", headers=auth(), timeout=60)
    assert r.json() == {"live": 1, "candidate": None, "percent": 0.0, "warning": None}, r.text
    r = httpx.post(f"{url}/programs/hops/promote", headers=auth(), timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "name" and "no candidate" in r.json()["detail"]
    httpx.post(f"{url}/programs/hops/rollout", json={"candidate": 2, "percent": 5}, headers=auth(), timeout=60)
    r = httpx.post(f"{url}/programs/hops/promote", headers=auth(), timeout=60)
    assert r.json() == {"live": 2, "candidate": None, "percent": 0.0, "warning": None}, r.text


def test_estimate_answers_what_tidyq_batch_estimate_prints_and_enqueues_nothing(api, redis_url, tmp_path):
    from producers.estimate import estimate_file

    rows = [{"custom_id": f"e{i}", "inputs": {"question": f"What is {i}+{i}?"}} for i in range(5)]
    rows.append({"custom_id": "dup", "inputs": {"question": "What is 0+0?"}})
    body = {"signature": SIG, "backend": "direct", "model": "openai/gpt-4o-mini", "rows": rows}
    r = httpx.post(f"{api.url}/jobs/estimate", json=body, headers=auth(TENANT_A), timeout=60)
    assert r.status_code == 200, r.text
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from shared.config import Settings

    cli = estimate_file(path, signature=SIG, program=None, backend="direct", model="openai/gpt-4o-mini",
                        settings=Settings())
    assert r.json() == {**cli, "file": "rows"}
    assert r.json()["items"] == 6 and r.json()["duplicates_folded"] == 1 and r.json()["cost_usd"] > 0
    upload = httpx.post(f"{api.url}/jobs/estimate", params={"signature": SIG, "backend": "direct",
                                                            "model": "openai/gpt-4o-mini"},
                        content=path.read_bytes(), headers={**auth(), "Content-Type": "application/x-ndjson"})
    assert upload.status_code == 200 and upload.json() == {**cli, "file": "body"}, upload.text
    bad_rows = [*rows[:2], {"custom_id": "x", "inputs": {"quest": "typo"}}]
    r = httpx.post(f"{api.url}/jobs/estimate", json={**body, "rows": bad_rows}, headers=auth())
    assert r.status_code == 422 and r.json()["field"] == "rows[2]: field 'inputs.quest'", r.text
    assert "tidyq-rows" not in r.text
    r = httpx.post(f"{api.url}/jobs/estimate", params={"signature": SIG, "backend": "mock"},
                   content=b'{"inputs": {"question": "ok"}}\n{"inputs": {}}\n',
                   headers={**auth(), "Content-Type": "application/jsonl"})
    assert r.status_code == 422 and r.json()["field"].startswith("body:2"), r.text
    r = httpx.post(f"{api.url}/jobs/estimate", json={"signature": SIG, "backend": "mock"}, headers=auth())
    assert r.status_code == 422 and r.json()["field"] == "rows"
    assert redis.Redis.from_url(redis_url).zcard(keys.jobs_index()) == 0  # nothing enqueued


def test_batch_mode_max_cost_and_tenant_as_the_cli_options(api, redis_url):
    rows = [{"custom_id": "a", "inputs": {"question": "1+1?"}}]
    base = {"signature": SIG, "backend": "mock", "rows": rows}
    r = httpx.post(f"{api.url}/jobs", json={**base, "max_cost_usd": 0.5, "tenant": "gamma"}, headers=auth())
    assert r.status_code == 201 and r.json()["tenant"] == "gamma", r.text  # an operator's token names any tenant
    spec = Client().store.spec(r.json()["id"])
    assert spec.max_cost_usd == 0.5 and spec.mode == "live" and spec.tenant == "gamma"
    mine = httpx.post(f"{api.url}/jobs", json={**base, "tenant": "alpha"}, headers=auth(TENANT_A))
    assert mine.status_code == 201 and mine.json()["tenant"] == "alpha"
    for body, token, field, status in [
        ({**base, "tenant": "beta"}, TENANT_A, "tenant", 403),   # a tenant token cannot choose another tenant
        ({**base, "mode": "economy"}, TOKEN, "mode", 422),       # economy needs direct/bedrock and a model
        ({**base, "mode": "cheap"}, TOKEN, "mode", 422),
        ({**base, "max_cost_usd": -1}, TOKEN, "max_cost_usd", 422),
        ({**base, "tenant": "bad tenant!"}, TOKEN, "tenant", 422),
        ({"signature": SIG, "backend": "mock", "inputs": {"question": "x"}, "mode": "economy"}, TOKEN, "mode", 422),
    ]:
        r = httpx.post(f"{api.url}/jobs", json=body, headers=auth(token))
        assert r.status_code == status and r.json()["field"] == field, (body, r.text)
    r = httpx.post(f"{api.url}/jobs", params={"signature": SIG, "backend": "mock", "tenant": "beta"},
                   content=b'{"inputs": {"question": "x"}}\n', headers={**auth(TENANT_A), "Content-Type":
                                                                        "application/x-ndjson"})
    assert r.status_code == 403 and r.json()["field"] == "tenant"
    r = httpx.post(f"{api.url}/jobs", params={"signature": SIG, "backend": "mock", "max_cost_usd": "2"},
                   content=b'{"inputs": {"question": "x"}}\n', headers={**auth(), "Content-Type":
                                                                        "application/x-ndjson"})
    assert r.status_code == 201 and Client().store.spec(r.json()["id"]).max_cost_usd == 2.0, r.text
    assert redis.Redis.from_url(redis_url).zcard(keys.jobs_index()) == 3


def test_queues_breakers_and_budget_answer_what_the_cli_prints(api, redis_url):
    from typer.testing import CliRunner

    from producers.cli import app
    from shared.breaker import BreakerSettings, CircuitBreaker, breaker_status
    from shared.budget import TenantBudgets

    doc = httpx.get(f"{api.url}/openapi.json").json()
    client = redis.Redis.from_url(redis_url)
    target = "direct:openai/gpt-4o-mini"
    b = CircuitBreaker(client, target, BreakerSettings(min_calls=2, open_seconds=60, max_open_seconds=60))
    for _ in range(2):
        b.record(b.acquire(), "fail")
    TenantBudgets(client, {}).charge("alpha", "job-a", 0.25)
    TenantBudgets(client, {}).charge("beta", "job-b", 0.5)
    runner = CliRunner()

    queues = httpx.get(f"{api.url}/queues", headers=auth())
    check_response(doc, doc["paths"]["/queues"]["get"], queues)
    cli = json.loads(runner.invoke(app, ["queues", "--json"]).stdout)
    assert set(queues.json()) == set(cli) and [q["name"] for q in queues.json()["queues"]] == \
        [q["name"] for q in cli["queues"]]
    assert [(x["target"], x["state"]) for x in queues.json()["breakers"]] == [(target, "open")]

    breakers = httpx.get(f"{api.url}/breakers", headers=auth())
    check_response(doc, doc["paths"]["/breakers"]["get"], breakers)
    cli = json.loads(runner.invoke(app, ["breaker", "status", "--json"]).stdout)
    assert [(x["target"], x["state"]) for x in breakers.json()] == [(x["target"], x["state"]) for x in cli] == \
        [(target, "open")]

    budget = httpx.get(f"{api.url}/budget", headers=auth())
    check_response(doc, doc["paths"]["/budget"]["get"], budget)
    assert budget.json() == json.loads(runner.invoke(app, ["budget"]).stdout)
    assert {t["tenant"]: t["jobs"] for t in budget.json()["tenants"]} == {"alpha": {"job-a": 0.25},
                                                                          "beta": {"job-b": 0.5}}
    one = httpx.get(f"{api.url}/budget", params={"tenant": "beta"}, headers=auth()).json()
    assert [t["tenant"] for t in one["tenants"]] == ["beta"]
    other_day = httpx.get(f"{api.url}/budget", params={"day": "2001-01-01"}, headers=auth()).json()
    assert all(t["spent_usd"] == 0 and t["day"] == "2001-01-01" for t in other_day["tenants"])
    bad_day = httpx.get(f"{api.url}/budget", params={"day": "yesterday"}, headers=auth())
    assert bad_day.status_code == 422 and bad_day.json()["field"] == "day"

    # a tenant's token: its own budget only, and no fleet-wide view or change
    mine = httpx.get(f"{api.url}/budget", headers=auth(TENANT_A)).json()
    assert [t["tenant"] for t in mine["tenants"]] == ["alpha"]
    theirs = httpx.get(f"{api.url}/budget", params={"tenant": "beta"}, headers=auth(TENANT_A))
    assert theirs.status_code == 403 and theirs.json()["field"] == "tenant"
    for method, path in (("GET", "/queues"), ("GET", "/breakers"), ("POST", f"/breakers/{target}/reset")):
        refused = httpx.request(method, f"{api.url}{path}", headers=auth(TENANT_A))
        assert refused.status_code == 403 and refused.json()["field"] == "Authorization", (path, refused.text)
    assert breaker_status(client, target)["state"] == "open"

    # the reset: bad targets name `target`, a known one is closed (a target's '/' is part of the path)
    for bad in ("nope:x", "direct", "direct:openai/never-called"):
        res = httpx.post(f"{api.url}/breakers/{bad}/reset", headers=auth())
        check_response(doc, doc["paths"]["/breakers/{target}/reset"]["post"], res)
        assert res.status_code == 422 and res.json()["field"] == "target", (bad, res.text)
    done = httpx.post(f"{api.url}/breakers/{target}/reset", headers=auth())
    check_response(doc, doc["paths"]["/breakers/{target}/reset"]["post"], done)
    assert done.json() == {"target": target, "was": "open", "now": "closed"}
    assert breaker_status(client, target)["state"] == "closed"
