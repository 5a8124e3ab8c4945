"""A stand-in for a hosted ColBERTv2 search server (the wiki17_abstracts server DSPy 2.x's examples
call) on 127.0.0.1.

Speaks its wire format: ``GET <url>?query=...&k=N`` (and ``POST`` with ``{"query", "k"}``) answers
``{"query": ..., "topk": [{"text", "pid", "rank", "score", "prob"}, ...]}``, k passages that are a
pure function of the query ("<Title> | passage <i> about <first query words>"). Stdlib only.

    python -m tests.fakes.colbert_server --port 0     # prints the URL
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["ColBERTv2Fake", "passages_for"]


def passages_for(query: str, k: int) -> list[dict]:
    """The stand-in's top ``k`` passages for ``query``, best first."""
    words = " ".join(query.split()[:6])
    out = []
    for rank in range(1, k + 1):
        digest = hashlib.sha256(f"{query}\x00{rank}".encode()).hexdigest()
        out.append({"text": f"Passage {digest[:6]} | passage {rank} about {words}", "pid": int(digest[:6], 16),
                    "rank": rank, "score": round(30.0 - rank, 2), "prob": round(1.0 / (rank + 1), 4)})
    return out


class ColBERTv2Fake:
    """``url`` is the search endpoint's root; any path answers. ``queries`` records what was asked."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("fake servers bind loopback only")
        fake = self
        self.queries: list[tuple[str, int]] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
                pass

            def do_GET(self) -> None:
                params = parse_qs(urlsplit(self.path).query)
                self._answer(params.get("query", [""])[0], params.get("k", ["10"])[0])

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                self._answer(str(body.get("query", "")), body.get("k", 10))

            def _answer(self, query: str, k: object) -> None:
                try:
                    count = int(str(k))
                except ValueError:
                    count = -1
                if not query or not 0 < count <= 100:
                    status, payload = 200, {"error": True, "message": "query and 0 < k <= 100 are required"}
                else:
                    with fake._lock:
                        fake.queries.append((query, count))
                    status, payload = 200, {"query": query, "topk": passages_for(query, count), "latency": 0.0}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ColBERTv2Fake:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ColBERTv2Fake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ColBERTv2 search server stand-in on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with ColBERTv2Fake(port=args.port) as fake:
        print(fake.url, flush=True)
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
