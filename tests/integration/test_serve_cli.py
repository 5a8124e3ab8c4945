"""`tidyq serve` as a process: refuses to start without authentication or with a bad option (exit 2,
saying what to set, no traceback), binds 127.0.0.1 by default, and answers with basic auth."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import urllib.error
import urllib.request

from tests.integration.serve_process import PASSWORD, TIDYQ, USER, Serve
from tests.processes import run_at_once


def run_serves(*cases: tuple[tuple[str, ...], dict[str, str]]) -> list[subprocess.CompletedProcess]:
    """`tidyq serve ARGS` with ENV for each (ARGS, ENV) case, all at once."""
    base = {k: v for k, v in os.environ.items() if k != "TIDYQ_UI_AUTH"}
    return run_at_once([([TIDYQ, "serve", *args], base | env) for args, env in cases])


def test_serve_refuses_to_start_without_authentication_or_with_bad_options(redis_url):
    auth = {"TIDYQ_UI_AUTH": f"{USER}:{PASSWORD}"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        none, bad_auth, bad_level, busy = run_serves(((), {}), ((), {"TIDYQ_UI_AUTH": "admin"}),
                                                     (("--log-level", "loud"), auth), (("--port", str(port)), auth))
    assert none.returncode == 2 and "set TIDYQ_UI_AUTH=user:password" in none.stderr
    assert bad_auth.returncode == 2 and "TIDYQ_UI_AUTH is not user:password" in bad_auth.stderr
    assert bad_level.returncode == 2 and "--log-level: unknown level 'loud'" in bad_level.stderr
    assert busy.returncode == 2 and f"--port: cannot listen on 127.0.0.1:{port}" in busy.stderr


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (Linux /proc/net/tcp, state 0A)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_serve_binds_loopback_by_default_and_answers_with_credentials(redis_url, tmp_path):
    with Serve(redis_url, tmp_path / "serve.log") as server:
        assert listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1 only
        try:
            urllib.request.urlopen(server.url + "/", timeout=5)
            raise AssertionError("the page answered without credentials")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(server.url + "/", headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=10) as page:
            assert page.status == 200 and "Running and recent jobs" in page.read().decode()
    assert server.proc.returncode is not None


def test_serve_behind_an_oauth_proxy_needs_no_password(redis_url, tmp_path):
    env = {"TIDYQ_UI_AUTH": "", "TIDYQ_UI_AUTH_PROXY_HEADER": "X-Auth-Request-Email"}
    with Serve(redis_url, tmp_path / "serve.log", **env) as server:
        signed_in = urllib.request.Request(server.url + "/ui/state.json",
                                           headers={"X-Auth-Request-Email": "ops@example.com"})
        with urllib.request.urlopen(signed_in, timeout=10) as r:
            assert r.status == 200 and b'"jobs"' in r.read()
        try:
            urllib.request.urlopen(server.url + "/ui/state.json", timeout=5)
            raise AssertionError("the page answered without the proxy's header")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401 and "www-authenticate" not in {k.lower() for k in exc.headers}
