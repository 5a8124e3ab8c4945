"""Stand-ins for Bedrock batch inference: moto's S3 in server mode, and the Bedrock control plane's
model-invocation-job API (moto 5.2.5 does not serve it) on 127.0.0.1, speaking botocore's REST-JSON:
``POST /model-invocation-job`` -> {"jobArn"}; ``GET /model-invocation-job/{arn}`` -> the job (status
Submitted -> InProgress -> Completed after ``batch_seconds``); ``POST .../stop`` -> Stopping, then
Stopped. A completed job reads its JSONL input from S3 and writes ``<output>/<job id>/<input>.out``
with ``modelOutput`` (an Anthropic Messages body) or ``error`` per record, shuffled.
``fail_texts``: records whose messages contain one of them get an error.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.fakes.answers import reply_for_messages
from tests.fakes.anthropic_batches import _chat
from tests.fakes.http_fake import estimate_tokens

ACCOUNT = "123456789012"


class MotoS3:
    """moto's server (S3 and the rest of AWS) on a free loopback port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> MotoS3:
        self.server.start()
        return self

    @property
    def url(self) -> str:
        host, port = self.server.get_host_and_port()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.stop()


class BedrockBatchFake:
    def __init__(self, s3_endpoint: str, *, region: str = "us-east-1", batch_seconds: float = 0.5, seed: int = 5):
        self.s3_endpoint, self.region, self.batch_seconds = s3_endpoint, region, batch_seconds
        self.fail_texts: set[str] = set()
        self.records_run = 0
        self.jobs: dict[str, dict] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> BedrockBatchFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._reply(*fake.handle("GET", self.path, None))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                self._reply(*fake.handle("POST", self.path, body))

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400:
                    self.send_header("x-amzn-ErrorType", payload.get("__type", "ValidationException"))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name=self.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    # --- the API ----------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: dict | None) -> tuple[int, dict]:
        path = unquote(urlsplit(raw_path).path)
        with self._lock:
            if method == "POST" and path == "/model-invocation-job":
                return self._create(body or {})
            if path.startswith("/model-invocation-job/"):
                ident = path[len("/model-invocation-job/"):]
                stop = ident.endswith("/stop")
                job = self.jobs.get(ident.removesuffix("/stop"))
                if job is None:
                    return 404, {"__type": "ResourceNotFoundException", "message": f"no job {ident}"}
                if method == "POST" and stop:
                    if job["status"] in ("Submitted", "InProgress"):
                        job["status"] = "Stopping"
                    return 200, {}
                if method == "GET":
                    self._advance(job)
                    return 200, {k: v for k, v in job.items() if not k.startswith("_")}
        return 404, {"__type": "UnknownOperationException", "message": f"{method} {path}"}

    def _create(self, body: dict) -> tuple[int, dict]:
        required = ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig")
        missing = [k for k in required if not body.get(k)]
        if missing:
            return 400, {"__type": "ValidationException", "message": f"missing {', '.join(missing)}"}
        job_id = uuid.uuid4().hex[:12]
        arn = f"arn:aws:bedrock:{self.region}:{ACCOUNT}:model-invocation-job/{job_id}"
        now = dt.datetime.now(dt.UTC).isoformat()
        self.jobs[arn] = {"jobArn": arn, "jobName": body["jobName"], "modelId": body["modelId"],
                          "roleArn": body["roleArn"], "status": "Submitted", "submitTime": now,
                          "lastModifiedTime": now, "inputDataConfig": body["inputDataConfig"],
                          "outputDataConfig": body["outputDataConfig"], "_t0": time.monotonic(), "_id": job_id}
        return 200, {"jobArn": arn}

    def _advance(self, job: dict) -> None:
        if job["status"] == "Stopping":
            job["status"] = "Stopped"
        elif job["status"] == "Submitted":
            job["status"] = "InProgress"
        elif job["status"] == "InProgress" and time.monotonic() - job["_t0"] >= self.batch_seconds:
            self._run(job)

    def _run(self, job: dict) -> None:
        s3 = self._s3()
        source = urlsplit(job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        text = s3.get_object(Bucket=source.netloc, Key=source.path.lstrip("/"))["Body"].read().decode()
        out_lines, errors = [], 0
        for raw in text.splitlines():
            if not raw.strip():
                continue
            record = json.loads(raw)
            body = record["modelInput"]
            self.records_run += 1
            if any(t in json.dumps(body.get("messages")) for t in self.fail_texts):
                errors += 1
                out_lines.append({"recordId": record["recordId"], "modelInput": body,
                                  "error": {"errorCode": 500, "errorMessage": "Internal server error"}})
                continue
            reply = reply_for_messages(_chat(body))
            prompt = "".join(m["content"] for m in _chat(body))
            out_lines.append({"recordId": record["recordId"], "modelInput": body, "modelOutput": {
                "id": f"msg_bdrk_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                "usage": {"input_tokens": estimate_tokens(prompt), "output_tokens": estimate_tokens(reply)}}})
        self._rng.shuffle(out_lines)
        out = urlsplit(job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        name = source.path.rsplit("/", 1)[-1]
        key = "/".join(p for p in (out.path.strip("/"), job["_id"], f"{name}.out") if p)
        s3.put_object(Bucket=out.netloc, Key=key, Body="".join(json.dumps(r) + "\n" for r in out_lines).encode())
        job.update(status="Completed" if not errors else "PartiallyCompleted", totalRecordCount=len(out_lines),
                   processedRecordCount=len(out_lines), successRecordCount=len(out_lines) - errors,
                   errorRecordCount=errors, endTime=dt.datetime.now(dt.UTC).isoformat())
