"""A stand-in for OpenAI's Files + Batches APIs (and chat completions, for items finished live).

Speaks the real wire format: ``POST /v1/files`` (multipart, purpose=batch) -> a file object;
``POST /v1/batches`` {input_file_id, endpoint, completion_window} -> a batch object that moves
validating -> in_progress -> completed after ``batch_seconds``; ``GET /v1/batches/{id}``;
``POST /v1/batches/{id}/cancel``; ``GET /v1/files/{id}/content`` -> the output JSONL, one
``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`` per line, in
an order shuffled per batch (OpenAI does not keep input order), failures in the error file.

Misbehaviour to script, for requests whose messages contain one of the given texts: ``fail_texts``
(a 500 error line), ``garble_texts`` (an answer the adapter cannot parse); ``expire_after`` (the
batch expires after that many lines: the rest come back as
``batch_expired`` errors). ``batch_lines`` counts the requests it executed inside batches.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from tests.fakes.http_fake import _json_reply, _Reply
from tests.fakes.openai_server import OpenAIFake


class OpenAIBatchFake(OpenAIFake):
    name = "openai-batches"

    def __init__(self, *, batch_seconds: float = 0.5, seed: int = 7, **kw: Any):
        super().__init__(**kw)
        self.batch_seconds = batch_seconds
        self.fail_texts: set[str] = set()
        self.garble_texts: set[str] = set()
        self.expire_after: int | None = None
        self.batch_lines = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._rng = random.Random(seed)
        self._batch_lock = threading.Lock()

    def route(self, method: str, path: str) -> bool:
        return super().route(method, path) or "/files" in path or "/batches" in path

    def _decide(self, method: str, path: str, headers: dict[str, str], body: Any, started: float) -> _Reply:
        if "/files" in path or "/batches" in path:
            with self._batch_lock:
                return self._batch_api(method, path.rstrip("/"), headers, body)
        return super()._decide(method, path, headers, body, started)

    # --- the Files + Batches API ----------------------------------------------------------------
    def _batch_api(self, method: str, path: str, headers: dict[str, str], body: Any) -> _Reply:
        parts = path.split("/")
        if method == "POST" and path.endswith("/files"):
            return self._upload(headers, body)
        if method == "GET" and path.endswith("/content") and "/files/" in path:
            data = self.files.get(parts[-2])
            if data is None:
                return self.error(404, f"No such File object: {parts[-2]}")
            return _Reply(200, {"Content-Type": "application/octet-stream"}, data)
        if method == "POST" and path.endswith("/batches"):
            return self._create(body)
        if "/batches/" in path:
            batch_id = parts[-2] if path.endswith("/cancel") else parts[-1]
            batch = self.batches.get(batch_id)
            if batch is None:
                return self.error(404, f"No batch found with id '{batch_id}'.")
            if method == "POST" and path.endswith("/cancel"):
                if batch["status"] in ("validating", "in_progress", "finalizing"):
                    batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
                return _json_reply(200, self._public(batch))
            if method == "GET":
                self._advance(batch)
                return _json_reply(200, self._public(batch))
        return self.error(404, f"no route for {method} {path}")

    def _upload(self, headers: dict[str, str], body: Any) -> _Reply:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        if "file" not in fields or fields.get("purpose") is None:
            return self.error(400, "'file' and 'purpose' are required")
        purpose = fields["purpose"].get_content().strip()
        if purpose != "batch":
            return self.error(400, f"Invalid purpose {purpose!r} for this test stand-in")
        data = fields["file"].get_payload(decode=True)
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = data
        return _json_reply(200, {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                 "filename": fields["file"].get_filename() or "batch.jsonl", "purpose": "batch",
                                 "status": "processed"})

    def _create(self, body: Any) -> _Reply:
        if not isinstance(body, dict) or body.get("input_file_id") not in self.files:
            return self.error(400, "input_file_id is not a known file")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return self.error(400, "endpoint must be /v1/chat/completions and completion_window 24h")
        lines = [json.loads(x) for x in self.files[body["input_file_id"]].decode().splitlines() if x.strip()]
        ids = [line.get("custom_id") for line in lines]
        if len(set(ids)) != len(ids) or any(not i for i in ids):
            return self.error(400, "custom_id values must be present and unique within a batch")
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": body["endpoint"],
                 "errors": None, "input_file_id": body["input_file_id"], "completion_window": "24h",
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        self.batches[batch["id"]] = batch
        batch["_lines"], batch["_t0"] = lines, time.monotonic()
        return _json_reply(200, self._public(batch))

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _advance(self, batch: dict) -> None:
        """validating -> in_progress -> (completed | expired); cancelling -> cancelled."""
        if batch["status"] == "cancelling":
            batch["status"], batch["cancelled_at"] = "cancelled", int(time.time())
            return
        if batch["status"] == "validating":
            batch["status"], batch["in_progress_at"] = "in_progress", int(time.time())
            return
        if batch["status"] != "in_progress" or time.monotonic() - batch["_t0"] < self.batch_seconds:
            return
        out, err = [], []
        lines = batch["_lines"]
        for index, line in enumerate(lines):
            cid = line["custom_id"]
            if self.expire_after is not None and index >= self.expire_after:
                err.append({"id": f"batch_req_{uuid.uuid4().hex[:20]}", "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed "
                                      "before the completion window expired."}})
                continue
            self.batch_lines += 1
            text = json.dumps(line["body"].get("messages"))
            if any(t in text for t in self.fail_texts):
                err.append({"id": f"batch_req_{uuid.uuid4().hex[:20]}", "custom_id": cid, "error": None,
                            "response": {"status_code": 500, "request_id": f"req_{uuid.uuid4().hex[:20]}",
                                         "body": {"error": {"message": "The server had an error",
                                                            "type": "server_error", "param": None, "code": None}}}})
                continue
            request = line["body"]
            garbled = any(t in text for t in self.garble_texts)
            content = "no fields here, sorry" if garbled else self.default_reply("", request)
            reply = self.success("/v1/chat/completions", request, content, 0)
            out.append({"id": f"batch_req_{uuid.uuid4().hex[:20]}", "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": f"req_{uuid.uuid4().hex[:20]}",
                                     "body": json.loads(reply.body)}})
        self._rng.shuffle(out)
        self._rng.shuffle(err)
        now = int(time.time())
        for rows, key in ((out, "output_file_id"), (err, "error_file_id")):
            if rows:
                file_id = f"file-{uuid.uuid4().hex[:24]}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[key] = file_id
        expired = self.expire_after is not None and self.expire_after < len(lines)
        batch["request_counts"] = {"total": len(lines), "completed": len(out),
                                   "failed": len(err)}
        batch["status"] = "expired" if expired else "completed"
        batch["expired_at" if expired else "completed_at"] = now
        batch["finalizing_at"] = now

    def cancelled_batches(self) -> list[str]:
        with self._batch_lock:
            return [b["id"] for b in self.batches.values() if b["status"] in ("cancelling", "cancelled")]
