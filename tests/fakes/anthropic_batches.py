"""A stand-in for Anthropic's Messages API and Message Batches on 127.0.0.1 (``base_url`` is the /v1 root).

``POST /v1/messages`` answers one message (items finished live). ``POST /v1/messages/batches``
{"requests": [{"custom_id", "params"}]} -> a ``message_batch`` whose ``processing_status`` is
in_progress until ``batch_seconds`` pass, then ended with a ``results_url``; the results are JSONL
``{"custom_id", "result": {"type": succeeded|errored|expired|canceled, ...}}`` in shuffled order.
``POST /v1/messages/batches/{id}/cancel`` -> canceling, then ended with the rest canceled.
Misbehaviour: ``fail_texts`` (errored results), ``expire_after`` (the rest expired).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
import uuid
from typing import Any

from tests.fakes.answers import reply_for_messages
from tests.fakes.http_fake import FakeProvider, _json_reply, _Reply, estimate_tokens


def _iso(ts: float | None = None) -> str:
    return dt.datetime.fromtimestamp(ts or time.time(), tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _chat(params: dict) -> list[dict[str, str]]:
    system = params.get("system") or ""
    if isinstance(system, list):
        system = "\n".join(p.get("text", "") for p in system)
    turns = []
    for m in params.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
        turns.append({"role": m.get("role", ""), "content": content or ""})
    return ([{"role": "system", "content": system}] if system else []) + turns


class AnthropicBatchFake(FakeProvider):
    name = "anthropic"

    def __init__(self, *, batch_seconds: float = 0.5, seed: int = 11, **kw: Any):
        super().__init__(**kw)
        self.batch_seconds = batch_seconds
        self.fail_texts: set[str] = set()
        self.expire_after: int | None = None
        self.batch_lines = 0
        self.batches: dict[str, dict] = {}
        self._rng = random.Random(seed)
        self._batch_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # --- FakeProvider hooks -------------------------------------------------------------------
    def route(self, method: str, path: str) -> bool:
        return path.rstrip("/").endswith("/messages") or "/messages/batches" in path

    def authorized(self, headers: dict[str, str], expected: str) -> bool:
        return next((v for k, v in headers.items() if k.lower() == "x-api-key"), "") == expected

    def unauthorized(self) -> _Reply:
        return self.error(401, "invalid x-api-key", error_type="authentication_error")

    def error(self, status: int, message: str, *, error_type: str | None = None,
              headers: dict[str, str] | None = None) -> _Reply:
        kind = error_type or {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error",
                              529: "overloaded_error"}.get(status, "api_error")
        return _json_reply(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)

    def default_reply(self, path: str, request: dict) -> str:
        return reply_for_messages(_chat(request))

    def validate(self, path: str, request: Any) -> _Reply | None:
        if "/messages/batches" in path:
            return None
        if not isinstance(request, dict) or not request.get("model") or not request.get("max_tokens"):
            return self.error(400, "model and max_tokens are required")
        return None

    def success(self, path: str, request: dict, content: str, latency_ms: int) -> _Reply:
        return _json_reply(200, self._message(request, content))

    def _message(self, params: dict, content: str) -> dict:
        prompt = "".join(m["content"] for m in _chat(params))
        return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": params.get("model"), "content": [{"type": "text", "text": content}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": estimate_tokens(prompt), "output_tokens": estimate_tokens(content)}}

    # --- Message Batches -----------------------------------------------------------------------
    def _decide(self, method: str, path: str, headers: dict[str, str], body: Any, started: float) -> _Reply:
        if "/messages/batches" not in path:
            return super()._decide(method, path, headers, body, started)
        with self._lock:
            expected = self._expected_auth
        if expected is not None and not self.authorized(headers, expected):
            return self.unauthorized()
        with self._batch_lock:
            return self._batch_api(method, path.rstrip("/"), body)

    def _batch_api(self, method: str, path: str, body: Any) -> _Reply:
        parts = path.split("/")
        if method == "POST" and path.endswith("/messages/batches"):
            return self._create(body)
        batch_id = parts[-2] if path.endswith(("/cancel", "/results")) else parts[-1]
        batch = self.batches.get(batch_id)
        if batch is None:
            return self.error(404, f"batch {batch_id} not found")
        if method == "POST" and path.endswith("/cancel"):
            if batch["processing_status"] == "in_progress":
                batch["processing_status"], batch["cancel_initiated_at"] = "canceling", _iso()
            return _json_reply(200, self._public(batch))
        if method == "GET" and path.endswith("/results"):
            if batch["processing_status"] != "ended":
                return self.error(400, "results are available once the batch has ended")
            return _Reply(200, {"Content-Type": "application/binary"}, batch["_results"])
        if method == "GET":
            self._advance(batch)
            return _json_reply(200, self._public(batch))
        return self.error(404, f"no route for {method} {path}")

    def _create(self, body: Any) -> _Reply:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return self.error(400, "requests: a non-empty list is required")
        ids = [r.get("custom_id") for r in requests]
        if len(set(ids)) != len(ids) or any(not isinstance(i, str) or not 0 < len(i) <= 64 for i in ids):
            return self.error(400, "custom_id must be unique, 1-64 characters")
        for r in requests:
            params = r.get("params") or {}
            if not params.get("model") or not params.get("max_tokens") or not params.get("messages"):
                return self.error(400, f"requests[{r['custom_id']}].params: model, max_tokens, messages required")
        batch = {"id": f"msgbatch_{uuid.uuid4().hex[:24]}", "type": "message_batch",
                 "processing_status": "in_progress",
                 "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                    "expired": 0},
                 "ended_at": None, "created_at": _iso(), "expires_at": _iso(time.time() + 86400),
                 "archived_at": None, "cancel_initiated_at": None, "results_url": None,
                 "_requests": requests, "_t0": time.monotonic()}
        self.batches[batch["id"]] = batch
        return _json_reply(200, self._public(batch))

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _advance(self, batch: dict) -> None:
        cancelling = batch["processing_status"] == "canceling"
        if batch["processing_status"] == "ended":
            return
        if not cancelling and time.monotonic() - batch["_t0"] < self.batch_seconds:
            return
        rows, counts = [], {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for index, request in enumerate(batch["_requests"]):
            cid, params = request["custom_id"], request["params"]
            if cancelling:
                result = {"type": "canceled"}
            elif self.expire_after is not None and index >= self.expire_after:
                result = {"type": "expired"}
            elif any(t in json.dumps(params.get("messages")) for t in self.fail_texts):
                self.batch_lines += 1
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "api_error", "message": "Internal server error"}}}
            else:
                self.batch_lines += 1
                result = {"type": "succeeded", "message": self._message(params, self.default_reply("", params))}
            counts[result["type"]] += 1
            rows.append({"custom_id": cid, "result": result})
        self._rng.shuffle(rows)
        batch["_results"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        batch.update(processing_status="ended", ended_at=_iso(), request_counts=counts,
                     results_url=f"{self.base_url}/messages/batches/{batch['id']}/results")

    def cancelled_batches(self) -> list[str]:
        with self._batch_lock:
            return [b["id"] for b in self.batches.values() if b["cancel_initiated_at"]]
