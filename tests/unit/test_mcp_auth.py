"""Bearer-token checks of `tidyq mcp --http`: static tokens, an RFC 7662 introspection endpoint
(a small loopback HTTP server speaking the real wire format), the settings that choose them, and
the SDK's middleware answering 401 (driven in-process through its ASGI app)."""

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx2
import pytest

from producers.mcp_auth import IntrospectionTokenVerifier, StaticTokenVerifier, http_auth
from producers.mcp_cli import parse_http
from producers.mcp_server import build_server
from shared.config import Settings
from shared.errors import BadInput, ConfigurationError

GOOD = "good-token-0123456789abcdef"
OTHER = "other-token-0123456789abcdef"
RESOURCE = "http://127.0.0.1:8765/mcp"


def verify(verifier, token):
    return anyio.run(verifier.verify_token, token)


def test_static_tokens_accept_listed_tokens_only():
    v = StaticTokenVerifier([GOOD, OTHER], scopes=["jobs"])
    assert verify(v, GOOD).client_id == "static-1"
    assert verify(v, OTHER).client_id == "static-2"
    assert verify(v, OTHER).scopes == ["jobs"]
    for wrong in ("", GOOD[:-1], GOOD + "x", GOOD.upper()):
        assert verify(v, wrong) is None


def test_static_tokens_must_be_long_and_errors_do_not_echo_them():
    with pytest.raises(ConfigurationError) as exc:
        StaticTokenVerifier([GOOD, "short-secret"])
    assert "#2" in str(exc.value) and "short-secret" not in str(exc.value)
    with pytest.raises(ConfigurationError):
        StaticTokenVerifier([])


def test_http_auth_from_settings():
    with pytest.raises(ConfigurationError, match="TIDYQ_MCP_TOKENS"):
        http_auth(Settings(mcp_tokens=None, mcp_oauth_introspection_url=None), host="127.0.0.1", port=1)
    auth, verifier = http_auth(Settings(mcp_tokens=f" {GOOD} , {OTHER} "), host="127.0.0.1", port=9)
    assert isinstance(verifier, StaticTokenVerifier) and verify(verifier, OTHER) is not None
    assert auth.resource_server_url is None
    with pytest.raises(ConfigurationError, match="ISSUER_URL"):
        http_auth(Settings(mcp_tokens=None, mcp_oauth_introspection_url="http://127.0.0.1:1/introspect"),
                  host="127.0.0.1", port=1)
    auth, verifier = http_auth(Settings(mcp_tokens=None, mcp_oauth_issuer_url="http://127.0.0.1:1",
                                        mcp_oauth_introspection_url="http://127.0.0.1:1/introspect",
                                        mcp_resource_url=RESOURCE, mcp_required_scopes="jobs, admin"),
                               host="127.0.0.1", port=8765)
    assert isinstance(verifier, IntrospectionTokenVerifier)
    assert auth.validate_token_resource is True and auth.required_scopes == ["jobs", "admin"]


@pytest.mark.parametrize("value,expected", [("127.0.0.1:8000", ("127.0.0.1", 8000)), (":9000", ("127.0.0.1", 9000)),
                                            ("9001", ("127.0.0.1", 9001)), ("0.0.0.0:80", ("0.0.0.0", 80)),
                                            ("[::1]:8080", ("::1", 8080))])
def test_parse_http(value, expected):
    assert parse_http(value) == expected


@pytest.mark.parametrize("value", ["", "host", "host:", "h:0", "h:70000", "[::1]8080"])
def test_parse_http_refuses(value):
    with pytest.raises(BadInput):
        parse_http(value)


class _Introspection(BaseHTTPRequestHandler):
    """RFC 7662: form-encoded token in, {"active": ...} out; requires client basic auth."""

    tokens: dict = {}

    def do_POST(self):  # noqa: N802
        auth = self.headers.get("Authorization", "")
        if auth != "Basic " + base64.b64encode(b"rs-client:rs-secret").decode():
            self.send_response(401)
            self.end_headers()
            return
        body = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        claims = self.tokens.get(body.get("token", [""])[0], {"active": False})
        data = json.dumps(claims).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def introspection():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Introspection)
    now = int(time.time())
    _Introspection.tokens = {
        GOOD: {"active": True, "client_id": "agent-1", "scope": "jobs read", "exp": now + 600, "aud": RESOURCE,
               "sub": "alice", "iss": "http://127.0.0.1:1"},
        "expired-token-0123456789": {"active": True, "client_id": "agent-1", "exp": now - 5, "aud": RESOURCE},
        "foreign-token-0123456789": {"active": True, "client_id": "agent-2", "exp": now + 600,
                                     "aud": ["http://elsewhere.example/mcp"]},
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/introspect"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_introspection_verifier(introspection):
    v = IntrospectionTokenVerifier(introspection, client_id="rs-client", client_secret="rs-secret",
                                   resource_url=RESOURCE)
    token = verify(v, GOOD)
    assert token.client_id == "agent-1" and token.scopes == ["jobs", "read"] and token.resource == RESOURCE
    assert token.subject == "alice"
    assert verify(v, "expired-token-0123456789") is None
    assert verify(v, "unknown-token-0123456789") is None
    assert verify(v, "foreign-token-0123456789").resource == "http://elsewhere.example/mcp"
    # wrong client credentials at the endpoint: refused, not crashed
    assert verify(IntrospectionTokenVerifier(introspection, client_id="rs-client", client_secret="nope"), GOOD) is None
    # endpoint down: refused
    assert verify(IntrospectionTokenVerifier("http://127.0.0.1:1/introspect"), GOOD) is None


def _post_all(app, header_sets):
    """MCP initialize POSTs through the SDK's streamable HTTP app (ASGI, in-process, one lifespan)."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}}}

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as http:
                return [await http.post("/mcp", json=init, headers={"Accept": "application/json, text/event-stream",
                                                                    **headers}) for headers in header_sets]

    return anyio.run(main)


def test_oauth_resource_server_refuses_foreign_and_missing_tokens(introspection, redis_url):
    settings = Settings(mcp_tokens=None, mcp_oauth_issuer_url="http://127.0.0.1:1",
                        mcp_oauth_introspection_url=introspection,
                        mcp_oauth_client_id="rs-client", mcp_oauth_client_secret="rs-secret", mcp_resource_url=RESOURCE)
    auth, verifier = http_auth(settings, host="127.0.0.1", port=8765)
    app = build_server(settings=settings, redis_url=redis_url, auth=auth, token_verifier=verifier).streamable_http_app(
        host="127.0.0.1")
    missing, foreign, expired, ok = _post_all(app, [
        {}, {"Authorization": "Bearer foreign-token-0123456789"},  # the second was issued for another server
        {"Authorization": "Bearer expired-token-0123456789"}, {"Authorization": f"Bearer {GOOD}"}])
    assert [r.status_code for r in (missing, foreign, expired)] == [401, 401, 401]
    assert ok.status_code == 200, ok.text
    # the protected resource metadata tells clients where to get a token (RFC 9728)
    assert "resource_metadata=" in missing.headers["www-authenticate"]
