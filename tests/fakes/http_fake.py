"""The machinery every stand-in provider shares: a threaded loopback HTTP/1.1 server, scripted
behaviour (latency, queued responses, seeded failure rate, hangs, auth) and counters.

A provider subclass only says which paths it serves, how a success looks and how an error
looks on its wire (``FakeProvider`` hooks). Everything here is thread-safe and settable while
requests are in flight. A fake running in another process is steered through ``/_fake/*``
(see ``FakeControl``), which is never counted.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request as _UrlRequest
from urllib.request import urlopen

Responder = Callable[[dict], str]
CONTROL_PREFIX = "/_fake/"


@dataclass
class ScriptedResponse:
    """One queued answer. ``body=None`` means the provider's own body for ``status`` (the normal
    answer for 2xx, its error JSON otherwise); ``error_type`` picks the provider's error name
    (e.g. Bedrock "ModelNotReadyException"); ``delay`` is added to the fake's latency."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | bytes | dict | list | None = None
    delay: float = 0.0
    error_type: str | None = None

    @classmethod
    def coerce(cls, value: ScriptedResponse | int | dict) -> ScriptedResponse:
        if isinstance(value, ScriptedResponse):
            return value
        if isinstance(value, int):
            return cls(status=value)
        return cls(**value)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when the body was not JSON
    at: float  # time.monotonic()


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: hundreds of clients connecting at once

    def __init__(self, address, handler, provider: FakeProvider):
        self.provider = provider
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # headers + body leave in one write (flushed per request)
    timeout = 120  # idle keep-alive connections close after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.provider._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.provider._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        return

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.provider._handle(self.command, self.path, dict(self.headers.items()), raw)
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True  # the client gave up (e.g. its timeout fired)


class FakeProvider:
    """Base class: start/stop, scripting and counters. Subclasses implement the hooks below."""

    name = "fake"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 responder: Responder | None = None, history_limit: int = 1000):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("fake providers bind loopback only")
        self.host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self.history_limit = history_limit
        self._init_state(latency=latency, responder=responder)

    # ---------------------------------------------------------------- hooks for subclasses
    def route(self, method: str, path: str) -> bool:
        """True when this provider serves ``method path`` (path without the query string)."""
        raise NotImplementedError

    def success(self, path: str, request: dict, content: str, latency_ms: int) -> _Reply:
        raise NotImplementedError

    def error(self, status: int, message: str, *, error_type: str | None = None,
              headers: dict[str, str] | None = None) -> _Reply:
        raise NotImplementedError

    def authorized(self, headers: dict[str, str], expected: str) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> _Reply:
        raise NotImplementedError

    def default_reply(self, path: str, request: dict) -> str:
        """The answer text when no custom responder is set."""
        raise NotImplementedError

    def validate(self, path: str, request: Any) -> _Reply | None:
        """A provider error reply for a malformed request, or None."""
        if not isinstance(request, dict):
            return self.error(400, "request body must be a JSON object")
        return None

    # ---------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} fake is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Root URL, e.g. http://127.0.0.1:PORT (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        self._stop.clear()
        self._server = _Server((self.host, self._requested_port), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.name}-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()  # wakes sleeping latency/hang waits
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # end idle keep-alive connections so no thread lingers
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    close = stop

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def serve_until_signal(self) -> None:
        """Block the main thread until SIGTERM/SIGINT, then stop (for ``python -m``)."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        while not done.wait(0.5):
            pass
        self.stop()

    # ---------------------------------------------------------------- scripting (thread-safe)
    def _init_state(self, *, latency: float = 0.0, responder: Responder | None = None) -> None:
        self._latency = float(latency)
        self._script: deque[ScriptedResponse] = deque()
        self._failure_rate = 0.0
        self._failure_statuses: tuple[int, ...] = (429, 503)
        self._failure_retry_after: float | None = None
        self._rng = random.Random(0)
        self._hang_remaining = 0
        self._hang_all = False
        self._hang_seconds = 30.0
        self._expected_auth: str | None = None
        self.responder: Responder | None = responder
        self._rate_bare = False  # 429s over the limit without Retry-After / x-ratelimit-* (set_rate_limit)
        self._rate = 0.0  # requests/s of the stand-in provider limit (0 = none), see set_rate_limit
        self._rate_tokens = 0.0
        self._rate_cap = 0.0
        self._rate_ts = 0.0
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._total = 0
        self._status_counts: Counter[int] = Counter()
        self._times: deque[float] = deque(maxlen=200_000)
        self._history: deque[RecordedRequest] = deque(maxlen=self.history_limit)
        self._in_flight = 0
        self._max_in_flight = 0

    def reset(self) -> None:
        """Back to a fresh fake: no script, no latency, no failures, no auth, zero counters."""
        with self._lock:
            self._init_state()

    def reset_counters(self) -> None:
        with self._lock:
            self._reset_counters()

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.set_latency(seconds)

    def set_latency(self, seconds: float) -> None:
        """Seconds every answer waits before it is sent (per request, concurrent requests overlap)."""
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def set_responder(self, responder: Responder | None) -> None:
        """``responder(request_json) -> str`` replaces the default answer text."""
        with self._lock:
            self.responder = responder

    def script(self, *responses: ScriptedResponse | int | dict) -> None:
        """Queue answers used, in order, by the next requests (before any other behaviour)."""
        with self._lock:
            self._script.extend(ScriptedResponse.coerce(r) for r in responses)

    def fail_next(self, n: int = 1, status: int = 429, *, retry_after: float | None = None,
                  error_type: str | None = None) -> None:
        """The next ``n`` requests get ``status`` (with a Retry-After header when given)."""
        headers = {"Retry-After": _fmt_seconds(retry_after)} if retry_after is not None else {}
        self.script(*(ScriptedResponse(status=status, headers=dict(headers), error_type=error_type)
                      for _ in range(n)))

    def set_failure_rate(self, rate: float, statuses: Iterable[int] = (429, 503), *,
                         retry_after: float | None = None, seed: int = 0) -> None:
        """Each request fails with probability ``rate`` (seeded RNG), status drawn from ``statuses``."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        statuses = tuple(statuses)
        if not statuses:
            raise ValueError("statuses must not be empty")
        with self._lock:
            self._failure_rate = float(rate)
            self._failure_statuses = statuses
            self._failure_retry_after = retry_after
            self._rng = random.Random(seed)

    def hang_next(self, n: int | None = 1, seconds: float = 30.0) -> None:
        """The next ``n`` requests (all of them when ``n`` is None) wait ``seconds`` before answering:
        set it above the client's timeout to provoke timeouts. ``hang_next(0)`` turns it off."""
        with self._lock:
            self._hang_all = n is None
            self._hang_remaining = 0 if n is None else int(n)
            self._hang_seconds = float(seconds)

    def set_rate_limit(self, per_second: float, burst_seconds: float = 1.0, *, headers: bool = True) -> None:
        """A provider-side request limit (a token bucket holding ``burst_seconds`` worth; a real
        per-minute limit is laxer than one second): a request over it gets 429 at once with
        Retry-After and x-ratelimit-remaining-requests / x-ratelimit-reset-requests; every answer
        carries the x-ratelimit-* headers. ``headers=False``: a bare 429 that names no wait, and no
        x-ratelimit-* on any answer (providers that say nothing). 0 switches it off."""
        with self._lock:
            self._rate_bare = not headers
            self._rate = max(0.0, float(per_second))
            self._rate_cap = max(1.0, self._rate * float(burst_seconds))
            self._rate_tokens = self._rate_cap
            self._rate_ts = time.monotonic()

    def _rate_take(self) -> dict[str, str] | None:
        """None when the request may go (its token taken); else the 429's headers. Under _lock."""
        if self._rate <= 0:
            return None
        now = time.monotonic()
        self._rate_tokens = min(self._rate_cap, self._rate_tokens + (now - self._rate_ts) * self._rate)
        self._rate_ts = now
        if self._rate_tokens >= 1.0:
            self._rate_tokens -= 1.0
            return None
        wait = (1.0 - self._rate_tokens) / self._rate
        if self._rate_bare:
            return {}
        return {"Retry-After": f"{wait:.3f}", "x-ratelimit-limit-requests": str(int(self._rate * 60)),
                "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": f"{int(wait * 1000) + 1}ms"}

    def _rate_headers(self) -> dict[str, str]:
        if self._rate <= 0 or self._rate_bare:
            return {}
        return {"x-ratelimit-limit-requests": str(int(self._rate * 60)),
                "x-ratelimit-remaining-requests": str(int(self._rate_tokens)),
                "x-ratelimit-reset-requests": f"{int(1000 / self._rate) + 1}ms"}

    def require_auth(self, credential: str | None) -> None:
        """Reject requests that do not carry ``credential`` (None switches the check off)."""
        with self._lock:
            self._expected_auth = credential

    # ---------------------------------------------------------------- counters
    @property
    def request_count(self) -> int:
        with self._lock:
            return self._total

    @property
    def status_counts(self) -> dict[int, int]:
        with self._lock:
            return dict(self._status_counts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent received requests (bounded by ``history_limit``), oldest first."""
        with self._lock:
            return list(self._history)

    @property
    def request_bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    @property
    def request_times(self) -> list[float]:
        """time.monotonic() of each received request (bounded), oldest first."""
        with self._lock:
            return list(self._times)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most requests being handled at the same moment: shows client concurrency."""
        with self._lock:
            return self._max_in_flight

    def requests_per_second(self) -> list[int]:
        """Requests received in each whole second since the first one."""
        times = self.request_times
        if not times:
            return []
        start = times[0]
        buckets = [0] * (int(times[-1] - start) + 1)
        for t in times:
            buckets[int(t - start)] += 1
        return buckets

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"total": self._total, "by_status": {str(k): v for k, v in sorted(self._status_counts.items())},
                    "in_flight": self._in_flight, "max_in_flight": self._max_in_flight,
                    "latency": self._latency, "failure_rate": self._failure_rate,
                    "scripted_pending": len(self._script)}

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` requests were received; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request_count >= n:
                return True
            time.sleep(0.01)
        return self.request_count >= n

    # ---------------------------------------------------------------- request handling
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], raw: bytes) -> _Reply:
        path = urlsplit(raw_path).path
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path, raw)
        body: Any
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = raw.decode("utf-8", "replace")
        started = time.monotonic()
        with self._lock:
            self._total += 1
            self._times.append(started)
            self._history.append(RecordedRequest(method, raw_path, headers, body, started))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        reply = None
        try:
            reply = self._decide(method, path, headers, body, started)
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1
                self._status_counts[reply.status if reply else 500] += 1

    def _decide(self, method: str, path: str, headers: dict[str, str], body: Any, started: float) -> _Reply:
        if not self.route(method, path):
            return self.error(404, f"no route for {method} {path}")
        with self._lock:
            expected = self._expected_auth
        if expected is not None and not self.authorized(headers, expected):
            return self.unauthorized()
        with self._lock:
            refused = self._rate_take()
            rate_headers = self._rate_headers()
        if refused is not None:
            return self.error(429, "Rate limit reached for requests (stand-in provider limit)", headers=refused)
        with self._lock:
            scripted = self._script.popleft() if self._script else None
            latency = self._latency
            hang = 0.0
            failure: int | None = None
            retry_after = self._failure_retry_after
            if scripted is None:
                if self._hang_all or self._hang_remaining > 0:
                    hang = self._hang_seconds
                    self._hang_remaining = max(0, self._hang_remaining - 1)
                if self._failure_rate and self._rng.random() < self._failure_rate:
                    failure = self._rng.choice(self._failure_statuses)
            responder = self.responder

        if scripted is not None:
            self._sleep(latency + scripted.delay)
            return self._scripted_reply(path, body, scripted, responder, started)
        if hang:
            self._sleep(hang)
        if failure is not None:
            self._sleep(latency)
            extra = {"Retry-After": _fmt_seconds(retry_after)} if retry_after is not None else {}
            return self.error(failure, f"injected failure {failure}", headers=extra)
        invalid = self.validate(path, body)
        if invalid is not None:
            return invalid
        self._sleep(latency)
        reply = self._answer(path, body, responder, started)
        reply.headers.update(rate_headers)
        return reply

    def _scripted_reply(self, path: str, body: Any, scripted: ScriptedResponse,
                        responder: Responder | None, started: float) -> _Reply:
        if scripted.body is None:
            if 200 <= scripted.status < 300:
                reply = self._answer(path, body if isinstance(body, dict) else {}, responder, started)
                reply.status = scripted.status
                reply.headers.update(scripted.headers)
                return reply
            return self.error(scripted.status, f"scripted failure {scripted.status}",
                              error_type=scripted.error_type, headers=dict(scripted.headers))
        raw = scripted.body
        if isinstance(raw, (dict, list)):
            raw = json.dumps(raw)
        data = raw.encode() if isinstance(raw, str) else raw
        headers = {"Content-Type": "application/json", **scripted.headers}
        return _Reply(scripted.status, headers, data)

    def _answer(self, path: str, body: dict, responder: Responder | None, started: float) -> _Reply:
        try:
            content = responder(body) if responder else self.default_reply(path, body)
        except Exception as exc:  # a broken custom responder shows up as a 500 with its message
            return self.error(500, f"responder failed: {type(exc).__name__}: {exc}")
        latency_ms = int((time.monotonic() - started) * 1000)
        return self.success(path, body, content, latency_ms)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    # ---------------------------------------------------------------- control API (other processes)
    def _control(self, method: str, path: str, raw: bytes) -> _Reply:
        action = path[len(CONTROL_PREFIX):].strip("/")
        try:
            payload = json.loads(raw) if raw else {}
            if action == "health":
                result: Any = {"ok": True, "provider": self.name}
            elif action == "stats":
                result = self.stats()
                result["requests_per_second"] = self.requests_per_second()
            elif action == "reset" and method == "POST":
                self.reset()
                result = self.stats()
            elif action == "config" and method == "POST":
                self.configure(**payload)
                result = self.stats()
            else:
                return _json_reply(404, {"error": f"unknown control action {method} {action}"})
        except (TypeError, ValueError) as exc:
            return _json_reply(400, {"error": str(exc)})
        return _json_reply(200, result)

    def configure(self, *, latency: float | None = None, failure_rate: float | None = None,
                  fail_statuses: Iterable[int] = (429, 503), retry_after: float | None = None,
                  seed: int = 0, auth: str | None = None, script: list[dict] | None = None,
                  hang_next: dict | None = None, rate_limit: float | None = None,
                  rate_burst_seconds: float = 1.0) -> None:
        """One call for every knob (also what POST /_fake/config takes as JSON)."""
        if rate_limit is not None:
            self.set_rate_limit(rate_limit, rate_burst_seconds)
        if latency is not None:
            self.set_latency(latency)
        if failure_rate is not None:
            self.set_failure_rate(failure_rate, fail_statuses, retry_after=retry_after, seed=seed)
        if auth is not None:
            self.require_auth(auth or None)
        if script:
            self.script(*script)
        if hang_next is not None:
            self.hang_next(**hang_next)


class FakeControl:
    """Steer and read a fake that runs in another process (``python -m tests.fakes.*``)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, action: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload or {}).encode() if method == "POST" else None
        req = _UrlRequest(f"{self.url}{CONTROL_PREFIX}{action}", data=data, method=method,
                          headers={"Content-Type": "application/json"})
        with urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - loopback only
            return json.loads(resp.read())

    def health(self) -> dict:
        return self._call("GET", "health")

    def stats(self) -> dict:
        return self._call("GET", "stats")

    def reset(self) -> dict:
        return self._call("POST", "reset")

    def configure(self, **settings: Any) -> dict:
        return self._call("POST", "config", settings)


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode())


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "0"
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def estimate_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters a token."""
    return max(1, len(text) // 4)


def run_cli(factory: Callable[..., FakeProvider], argv: list[str] | None = None, *, description: str) -> int:
    """``python -m tests.fakes.<provider> --port N --latency S ...``: print the URL, serve until
    SIGTERM/SIGINT. Steer it afterwards with FakeControl(url)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", default="429,503", help="comma-separated statuses for --failure-rate")
    parser.add_argument("--retry-after", type=float, default=None, help="Retry-After seconds on injected failures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--auth", default=None, help="credential every request must carry")
    parser.add_argument("--rate-limit", type=float, default=0.0, help="provider limit, requests/s (429 above it)")
    parser.add_argument("--rate-burst", type=float, default=1.0, help="seconds of requests the limit lets burst")
    args = parser.parse_args(argv)
    fake = factory(port=args.port, latency=args.latency)
    if args.rate_limit:
        fake.set_rate_limit(args.rate_limit, args.rate_burst)
    if args.failure_rate:
        fake.set_failure_rate(args.failure_rate, [int(s) for s in args.fail_status.split(",") if s],
                              retry_after=args.retry_after, seed=args.seed)
    if args.auth:
        fake.require_auth(args.auth)
    fake.start()
    print(fake.url, flush=True)
    try:
        fake.serve_until_signal()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run tests.fakes.openai_server or tests.fakes.bedrock_server instead")
