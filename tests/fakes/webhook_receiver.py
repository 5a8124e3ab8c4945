"""A loopback webhook receiver: checks every Tidyq-Signature, answers scripted statuses (e.g. 500
twice, then 200), records what arrived. Speaks plain HTTP/1.1 like any service would."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shared.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature


class WebhookReceiver:
    def __init__(self, secret: str, statuses: list[int] | None = None):
        self.secret = secret.encode()
        self.statuses = list(statuses or [])  # answered in order; 200 once they run out
        self.deliveries: list[dict] = []  # every request: event_id, signature_ok, status answered, body
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = verify_signature(receiver.secret, self.headers.get(SIGNATURE_HEADER, ""), body)
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.deliveries.append({"event_id": self.headers.get(EVENT_ID_HEADER),
                                                "event": self.headers.get("Tidyq-Event"), "signature_ok": ok,
                                                "status": status, "body": json.loads(body)})
                self.send_response(status if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tidyq?source=test"

    def delivered(self) -> list[dict]:
        with self._lock:
            return [d for d in self.deliveries if d["status"] == 200 and d["signature_ok"]]

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
