"""`tidyq mcp`: serve the queue's tools to AI agents over MCP.

stdio by default (the MCP client starts this command; stdout carries the protocol, so everything
else goes to stderr), or streamable HTTP with ``--http HOST:PORT`` (127.0.0.1 unless told
otherwise), where every request needs a bearer token (TIDYQ_MCP_TOKENS or an OAuth authorization
server, see producers/mcp_auth.py). ``--embedded`` starts a private redis-server and one worker
for the session, so an agent can try tidyq with nothing else running.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import tempfile
from contextlib import ExitStack
from pathlib import Path

import typer

from producers.cli import EXIT_BAD_INPUT, app, err
from shared.errors import BadInput, ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def parse_http(value: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'PORT' (host 127.0.0.1); IPv6 as '[::1]:PORT'."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise BadInput(f"expected [IPV6]:PORT, got {value!r}", where="--http")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    else:
        host, port = "", text
    host = host or DEFAULT_HOST
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"expected HOST:PORT with a port from 1 to 65535, got {value!r}", where="--http")
    return host, int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quiet_logging(level: str) -> None:
    """Our and the SDK's logs on stderr at ``level``; never the protocol stream (stdout)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


@app.command("mcp")
def mcp(
    http: str | None = typer.Option(None, "--http", metavar="HOST:PORT",
                                       help="serve streamable HTTP on HOST:PORT (default: stdio); needs a bearer "
                                            "token (TIDYQ_MCP_TOKENS or TIDYQ_MCP_OAUTH_*)"),
    root: str | None = typer.Option(None, "--root", help="directory JSONL paths are read from (default: "
                                                            "TIDYQ_MCP_ROOT; unset: paths are refused)"),
    embedded: bool = typer.Option(False, "--embedded", help="start a private redis-server and one worker for "
                                                            "this session (try-out; stopped on exit)"),
    path: str = typer.Option("/mcp", "--path", help="URL path of the HTTP endpoint"),
    log_level: str = typer.Option("WARNING", "--log-level", help="stderr log level"),
):
    """Serve tidyq's tools (predict, submit_batch, job_status, job_results, cancel_job,
    list_programs, submit_optimize) to MCP clients such as Claude Desktop or an IDE."""
    from shared.config import get_settings

    try:
        settings = get_settings()
        if root is not None and not Path(root).expanduser().is_dir():
            raise BadInput(f"{root!r} is not a directory", where="--root")
        address = parse_http(http) if http is not None else None
        auth = verifier = None
        if address is not None:
            from producers.mcp_auth import http_auth

            auth, verifier = http_auth(settings, host=address[0], port=address[1])
    except (BadInput, ConfigurationError) as exc:
        err.print(f"tidyq: error: {exc}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    _quiet_logging(log_level.upper())
    with ExitStack() as stack:
        redis_url = None
        if embedded:
            # An MCP client ends a stdio server by closing stdin, then SIGTERM to our process group
            # after ~2 s: turn the signal into KeyboardInterrupt so the embedded worker and
            # redis-server (in their own sessions) are always stopped too.
            previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
            stack.callback(lambda: [signal.signal(sig, handler) for sig, handler in previous.items()])
            redis_url = _start_embedded(stack)
        from producers.mcp_server import build_server

        server = build_server(settings=settings, redis_url=redis_url, root=root, auth=auth, token_verifier=verifier)
        try:
            if address is None:
                server.run("stdio")
            else:
                host, port = address
                if not _loopback(host):
                    err.print(f"tidyq mcp: listening on {host}:{port} beyond loopback; put TLS in front of it "
                              "(tokens travel in every request)", markup=False)
                err.print(f"tidyq mcp: serving http://{host if ':' not in host else f'[{host}]'}:{port}{path}",
                          markup=False)
                server.run("streamable-http", host=host, port=port, streamable_http_path=path)
        except KeyboardInterrupt:
            pass


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _start_embedded(stack: ExitStack) -> str:
    from producers.local_worker import LocalWorker
    from shared.redis_server import RedisServer

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tidyq-mcp-")))
    redis_server = stack.enter_context(RedisServer(directory=tmp))
    worker = LocalWorker(redis_server.url, concurrency=2, log_path=tmp / "worker.log", cwd=tmp)
    stack.callback(worker.stop, timeout=1.0)  # a throwaway worker: a short warm stop, then SIGKILL
    worker.start(timeout=90)
    err.print(f"tidyq mcp: embedded redis-server {redis_server.url} and one worker (pid {worker.pid}, logs in "
              f"{tmp}); both stop when this server exits", markup=False)
    return redis_server.url
