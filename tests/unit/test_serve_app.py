"""The jobs page app (producers/serve/app.py) in process, on a real redis-server with jobs written by
the real JobStore: authentication, what the page shows and hides, paging, errors, headers.
The browser test (tests/integration/test_serve_browser.py) runs it as `tidyq serve` for real."""

from __future__ import annotations

import base64
import re
import time

import pytest
import redis
from starlette.testclient import TestClient

from producers.serve.app import build_app
from producers.serve.auth import BasicCredentials
from shared import keys
from shared.config import Settings
from shared.errors import ConfigurationError
from shared.redis_server import free_port
from shared.store import JobStore
from tests.unit.test_job_overview import make_job, record

USER, PASSWORD = "ops", "correct-horse-battery"


def auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def client_for(redis_url: str, **settings) -> TestClient:
    s = Settings(redis_url=redis_url, ui_auth=f"{USER}:{PASSWORD}", **settings)
    return TestClient(build_app(s))


@pytest.mark.parametrize("value, message", [
    (None, "TIDYQ_UI_AUTH=user:password"), ("", "TIDYQ_UI_AUTH=user:password"),
    ("no-colon-here", "is not user:password"), (":password-only", "is not user:password"),
    ("ops:short", "shorter than 8"),
])
def test_the_app_is_not_built_without_usable_credentials(value, message):
    with pytest.raises(ConfigurationError, match=message):
        build_app(Settings(ui_auth=value))


def test_every_page_needs_the_credentials_but_health_and_the_api_prefix(redis_url):
    c = client_for(redis_url)
    for path in ("/", "/ui/state.json", "/jobs/abc", "/ui/jobs/abc.json", "/static/live.js"):
        r = c.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith('Basic realm="tidyq"'), path
    no_colon = "Basic " + base64.b64encode(b"ops").decode()
    for bad in (auth(password="wrong-password"), auth(user="root"), {"Authorization": "Basic !!notbase64"},
                {"Authorization": "Bearer " + PASSWORD}, {"Authorization": no_colon}):
        assert c.get("/", headers=bad).status_code == 401
    assert c.get("/", headers=auth()).status_code == 200
    assert c.get("/healthz").text == "ok\n"
    # the REST API mounts under /api/v1 with its own bearer auth: the page's basic auth stays out of it
    api = c.get("/api/v1/jobs")
    assert not api.headers.get("www-authenticate", "").startswith("Basic") and api.text != "authentication required\n"


def test_credentials_check_is_exact():
    creds = BasicCredentials("a", "password:with:colons")
    header = "Basic " + base64.b64encode(b"a:password:with:colons").decode()
    assert creds.check(header) and creds.check(header.replace("Basic", "basic"))
    assert not creds.check(None) and not creds.check("Basic ") and not creds.check(header + "x")


def test_index_shows_jobs_with_counts_errors_and_escapes_item_data(redis_url):
    store = JobStore(redis.Redis.from_url(redis_url))
    job = make_job(store, 5, backend="direct", model="openai/gpt-4o-mini")
    record(store, job, [("ok-1", None), ("<img src=x onerror=alert(1)>", "LMError"), ("x2", "BadInput")])
    c = client_for(redis_url, mlflow_tracking_uri="http://127.0.0.1:5000")
    redis.Redis.from_url(redis_url).hset(keys.job(job), "mlflow_run_id", "run42")
    page = c.get("/", headers=auth())
    assert page.status_code == 200
    html = page.text
    assert f'<a href="/jobs/{job}">{job}</a>' in html
    assert 'value="60.0"' in html and "3/5" in html and "direct:openai/gpt-4o-mini" in html
    assert "BadInput 1" in html and "LMError 1" in html
    assert 'href="http://127.0.0.1:5000/#/runs/run42"' in html
    assert "predict.direct" in html and "no live worker" in html
    assert "q ok-1" not in html and "answer" not in html  # no item input or output on the page
    state = c.get("/ui/state.json", headers=auth()).json()
    row = state["jobs"][0]
    assert row["key"] == job and row["progress"] == 60.0 and row["failed"] == 2 and row["done"] == "3/5"
    assert {q["name"] for q in state["queues"]} >= {"predict.mock", "predict.direct"}
    assert state["workers"] == [] and state["breakers"] == []
    # the job page: failed items escaped, never their inputs
    detail = c.get(f"/jobs/{job}", headers=auth()).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail and "<img src=x" not in detail
    assert "LMError for &lt;img" in detail and "q &lt;img" not in detail
    assert len(re.findall(r'<tr class="failed-item">', detail)) == 2


def test_failed_items_are_paged_by_cursor_links(redis_url):
    store = JobStore(redis.Redis.from_url(redis_url))
    job = make_job(store, 400)
    outcomes = [(f"item-{i:03d}", "ValidationFailed" if i % 4 == 0 else None) for i in range(400)]
    record(store, job, outcomes)
    c = client_for(redis_url)
    seen, url = [], f"/jobs/{job}?limit=30"
    while url:
        html = c.get(url, headers=auth()).text
        seen += re.findall(r'<tr class="failed-item"><td>(item-\d+)</td>', html)
        nxt = re.search(r'<a rel="next" href="([^"]+)">', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert seen == [cid for cid, err in outcomes if err]
    page = c.get(f"/jobs/{job}", headers=auth()).text
    assert '<td>ValidationFailed</td><td class="num" data-field="count">100</td>' in page
    assert c.get(f"/ui/jobs/{job}.json", headers=auth()).json()["errors"] == [
        {"key": "ValidationFailed", "type": "ValidationFailed", "count": 100}]


def test_wrong_ids_and_parameters_are_named_and_redis_outages_are_a_503(redis_url):
    c = client_for(redis_url)
    r = c.get("/jobs/0123456789abcdef", headers=auth())
    assert r.status_code == 404 and "no job &#39;0123456789abcdef&#39;" in r.text
    missing = c.get("/ui/jobs/nope.json", headers=auth())
    assert missing.status_code == 404
    assert missing.json() == {"error": "job: no job 'nope' (wrong id, or its results expired)"}
    assert c.get("/jobs/bad%20id!", headers=auth()).status_code == 404
    r = c.get("/?limit=0", headers=auth())
    assert r.status_code == 400 and "&#39;limit&#39; must be between 1 and 200" in r.text
    assert c.get("/ui/state.json?limit=abc", headers=auth()).json()["error"].startswith("query parameter 'limit'")
    down = client_for(f"redis://127.0.0.1:{free_port()}/0")
    r = down.get("/ui/state.json", headers=auth())
    assert r.status_code == 503 and r.json()["error"].startswith("cannot reach Redis")


def test_pages_carry_a_strict_content_security_policy(redis_url):
    c = client_for(redis_url)
    r = c.get("/", headers=auth())
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text and ' style="' not in r.text  # nothing inline for the CSP to block
    assert c.get("/").headers["content-security-policy"] == csp  # the 401 too


def test_the_rest_api_mounts_under_api_v1_with_its_own_auth(redis_url):
    """The real REST API (producers/api/) under /api/v1: bearer tokens there, the page's basic auth
    everywhere else, and the API's own headers (not the page's CSP) on its answers."""
    without_tokens = build_app(Settings(redis_url=redis_url, ui_auth=f"{USER}:{PASSWORD}"))
    assert without_tokens.state.api_off == "set TIDYQ_API_TOKENS to serve the REST API under /api/v1"
    token = "api-token-0123456789abcdef"
    app = build_app(Settings(redis_url=redis_url, ui_auth=f"{USER}:{PASSWORD}", api_tokens=token))
    assert app.state.api_off is None
    listed = make_job(JobStore(redis.Redis.from_url(redis_url)), 1)
    with TestClient(app) as c:
        r = c.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and [j["id"] for j in r.json()["jobs"]] == [listed]
        assert "content-security-policy" not in r.headers  # the API sets its own headers
        assert c.get("/api/v1/jobs", headers=auth()).status_code == 401  # the page's login is no API token
        assert c.get("/api/v1/jobs").headers["content-type"].startswith("application/problem+json")
        assert c.get("/").status_code == 401  # the page keeps its basic auth
        assert c.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_running_jobs_come_first_however_many_newer_jobs_there_are(redis_url):
    client = redis.Redis.from_url(redis_url)
    store = JobStore(client)
    old = make_job(store, 10, created_at=time.time() - 3000)
    record(store, old, [("a", None)])  # running
    client.zadd(keys.active_jobs(), {old: time.time()})  # what a worker writes when it starts a chunk
    newer = [make_job(store, 1) for _ in range(8)]
    state = client_for(redis_url).get("/ui/state.json?limit=5", headers=auth()).json()
    assert [j["id"] for j in state["jobs"]] == [old, *reversed(newer[-4:])]
    assert state["jobs"][0]["status"] == "running" and state["jobs"][0]["done"] == "1/10"


def test_behind_an_oauth_proxy_its_user_header_is_believed_from_the_proxy_only(redis_url):
    settings = Settings(redis_url=redis_url, ui_auth_proxy_header="X-Auth-Request-Email",
                        ui_auth_proxy_from="127.0.0.1, 10.0.0.0/8")
    signed_in = {"X-Auth-Request-Email": "ops@example.com"}
    proxy = TestClient(build_app(settings), client=("10.1.2.3", 40000))
    assert proxy.get("/", headers=signed_in).status_code == 200
    assert proxy.get("/", headers={"x-auth-request-email": "ops@example.com"}).status_code == 200
    r = proxy.get("/")
    assert r.status_code == 401 and "www-authenticate" not in r.headers  # no browser prompt: sign in at the proxy
    assert proxy.get("/", headers={"X-Auth-Request-Email": "  "}).status_code == 401
    assert proxy.get("/", headers=auth()).status_code == 401  # no basic credentials configured
    elsewhere = TestClient(build_app(settings), client=("192.168.1.9", 40000))
    assert elsewhere.get("/", headers=signed_in).status_code == 401  # anyone else could send the header
    both = Settings(redis_url=redis_url, ui_auth=f"{USER}:{PASSWORD}", ui_auth_proxy_header="X-Forwarded-User")
    direct = TestClient(build_app(both), client=("192.168.1.9", 40000))
    assert direct.get("/", headers=auth()).status_code == 200
    assert direct.get("/", headers={"X-Forwarded-User": "ops"}).status_code == 401
    forwarded = {"X-Forwarded-User": "ops"}
    assert TestClient(build_app(both), client=("::1", 1)).get("/", headers=forwarded).status_code == 200
    assert TestClient(build_app(both)).get("/", headers=forwarded).status_code == 401  # "testclient": not an IP


@pytest.mark.parametrize("trusted, message", [("", "names no address"), ("127.0.0.1,proxy.local", "'proxy.local'")])
def test_a_proxy_trusted_from_nowhere_or_a_bad_address_is_refused(trusted, message):
    with pytest.raises(ConfigurationError, match=message):
        build_app(Settings(ui_auth_proxy_header="X-Forwarded-User", ui_auth_proxy_from=trusted))
