"""The API's endpoints. Each one checks the caller, then does what the matching CLI command does,
through the AsyncClient (the same checks, job building and keys as `tidyq` and the Python client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from producers.api import models
from producers.api.auth import ApiTokens, Caller
from producers.api.problems import Problem, bad_input
from producers.api.schema import JSONL_TYPES, openapi
from producers.async_client import AsyncClient, AsyncJob
from producers.query_params import number_param
from producers.submission import PREDICT_ITEM_ID, JobFailed, predict_outputs
from shared.config import Settings
from shared.errors import BadInput
from shared.jobs import JobState
from shared.program_uri import check_name
from shared.store import JobNotFound

UPLOAD_FIELDS = ("signature", "program", "backend", "model", "webhook_url", "idempotency_key", "chunk_size",
                 "deadline_seconds", "mode", "max_cost_usd", "tenant", "item_cache")
BATCH_ONLY = ("mode", "max_cost_usd")
# the registry's BadInput names CLI arguments: the API's fields instead
REGISTRY_FIELDS = {"NAME": "name", "--name": "name", "--candidate": "candidate", "--percent": "percent",
                   "PROGRAM": "program", "--state": "state"}
MAX_PAGE = 1000


class Api:
    """The state every endpoint needs: settings, tokens, one AsyncClient."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.tokens = ApiTokens.from_settings(settings)
        self.client = AsyncClient(settings=settings)

    # --- helpers ---------------------------------------------------------------------------------
    def caller(self, request: Request) -> Caller:
        caller = self.tokens.caller(request.headers.get("authorization"))
        if caller is None:
            raise Problem(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer <token>)",
                          headers={"WWW-Authenticate": 'Bearer realm="tidyq"'})
        return caller

    async def visible_job(self, request: Request, caller: Caller) -> tuple[AsyncJob, dict]:
        job_id = request.path_params["job_id"]
        status = (await self.client.store.status(job_id)).model_dump(mode="json")
        if not caller.may_see(status.get("tenant")):
            raise JobNotFound(job_id)  # another tenant's job does not exist for this caller
        return AsyncJob(self.client, job_id), status

    def _number(self, request: Request, name: str, kind: type, *, default: Any = None, low: float | None = None,
                high: float | None = None) -> Any:
        return number_param(request.query_params, name, kind, default=default, low=low, high=high)

    # --- endpoints ---------------------------------------------------------------------------------
    async def schema(self, request: Request) -> Response:
        return JSONResponse(openapi())

    async def submit(self, request: Request) -> Response:
        caller = self.caller(request)
        wait = self._number(request, "wait", float, low=0.0, high=self.settings.api_max_wait_seconds)
        media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media in JSONL_TYPES:
            job = await self._submit_upload(request, caller)
        elif media in ("application/json", ""):
            job = await self._submit_json(request, caller)
        else:
            raise Problem(415, "unsupported-media-type", f"send application/json or a JSONL upload "
                          f"({', '.join(JSONL_TYPES)}), not {media}", field="Content-Type")
        view = await self._view(job, wait)
        location = f"{request.scope.get('root_path', '')}/jobs/{job.id}"
        return JSONResponse(view, status_code=200 if job.existing else 201, headers={"Location": location})

    async def _submit_json(self, request: Request, caller: Caller) -> AsyncJob:
        req = models.JobRequest.model_validate(await self._json_body(request))
        if sum(x is not None for x in (req.inputs, req.rows, req.optimize)) != 1:
            raise BadInput("give exactly one of 'inputs' (a predict), 'rows' (a batch) or 'optimize'", where="inputs")
        if req.rows is None:
            for name in BATCH_ONLY:
                if getattr(req, name) is not None:
                    raise BadInput("only a batch ('rows' or a JSONL upload) takes this", where=name)
        if req.optimize is not None:
            return await self._submit_optimize(req, caller)
        options = self._options(req, request, caller)
        if req.inputs is not None:
            for name in ("chunk_size", *BATCH_ONLY):
                options.pop(name)
            return await self.client.submit_predict(req.signature, req.inputs, **options)
        return await self.client.submit_batch(req.rows or [], req.signature, **options)

    async def _json_body(self, request: Request) -> dict:
        """The request's JSON object (at most TIDYQ_API_JSON_MAX_BYTES, read as it arrives)."""
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.settings.api_json_max_bytes:
                raise Problem(413, "too-large", f"the JSON body is over {self.settings.api_json_max_bytes} bytes "
                              "(TIDYQ_API_JSON_MAX_BYTES); send large batches as a JSONL upload", field="body")
        try:
            body = json.loads(bytes(raw) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise Problem(400, "malformed-json", f"the body is not JSON: {exc}", field="body") from None
        if not isinstance(body, dict):
            raise Problem(422, "bad-input", "the body must be a JSON object", field="body")
        return body

    async def _submit_optimize(self, req: models.JobRequest, caller: Caller) -> AsyncJob:
        opts = req.optimize.model_dump() if req.optimize else {}
        try:
            return await self.client.submit_optimize(signature=req.signature, program=req.program, backend=req.backend,
                                                     model=req.model, tenant=caller.tenant, **opts)
        except BadInput as exc:  # the optimize checks name CLI flags: name the API fields instead
            problem = bad_input(exc)
            where = problem.field or ""
            if where.startswith("--"):
                flag = where[2:].split(" ", 1)
                name = {"set": "settings", "metric-option": "metric_options"}.get(flag[0], flag[0].replace("-", "_"))
                path = name if name in ("signature", "program") else f"optimize.{name}"
                problem.field = path + (f".{flag[1]}" if len(flag) > 1 else "")
            elif where.startswith(("trainset", "valset")):
                problem.field = f"optimize.{where}"
            raise problem from None

    def _options(self, req: models.JobRequest, request: Request, caller: Caller) -> dict:
        key = req.idempotency_key or request.headers.get("idempotency-key")
        if key and caller.tenant:
            key = f"{caller.tenant}\x00{key}"  # one tenant's key never returns another tenant's job
        return {"backend": req.backend, "model": req.model, "program": req.program, "fallbacks": req.fallbacks,
                "idempotency_key": key, "deadline_seconds": req.deadline_seconds, "webhook_url": req.webhook_url,
                "tenant": self._tenant(req, caller), "chunk_size": req.chunk_size, "mode": req.mode or "live",
                "max_cost_usd": req.max_cost_usd, "item_cache": req.item_cache is not False}

    @staticmethod
    def _tenant(req: models.JobRequest, caller: Caller) -> str | None:
        """A tenant token's jobs are its tenant's; a token without one may name any tenant (`--tenant`)."""
        if caller.tenant is None:
            return req.tenant
        if req.tenant not in (None, caller.tenant):
            raise Problem(403, "forbidden", f"this token submits for tenant {caller.tenant!r} only; it cannot "
                          "choose another tenant", field="tenant")
        return caller.tenant

    def _operator(self, request: Request) -> Caller:
        """Registry changes serve every tenant's jobs: only a token without a tenant may make them."""
        caller = self.caller(request)
        if caller.tenant is not None:
            raise Problem(403, "forbidden", "a tenant's token cannot change the program registry; use an "
                          "operator token (one without TENANT= in TIDYQ_API_TOKENS)", field="Authorization")
        return caller

    def _fleet(self, request: Request) -> Caller:
        """The queues and the breakers serve every tenant: only a token without a tenant may see or reset them."""
        caller = self.caller(request)
        if caller.tenant is not None:
            raise Problem(403, "forbidden", "a tenant's token cannot see or change fleet-wide state (queues, "
                          "breakers); use an operator token (one without TENANT= in TIDYQ_API_TOKENS)",
                          field="Authorization")
        return caller

    def _redis(self) -> Any:
        from shared.redisconn import get_redis

        return get_redis(self.settings.redis_url or self.settings.default_redis_url)

    async def _submit_upload(self, request: Request, caller: Caller) -> AsyncJob:
        query = {name: request.query_params[name] for name in UPLOAD_FIELDS if name in request.query_params}
        fallbacks = [f for v in request.query_params.getlist("fallback") for f in v.split(",") if f.strip()]
        unknown = set(request.query_params) - {*UPLOAD_FIELDS, "fallback", "wait"}
        if unknown:
            raise BadInput(f"unknown parameter(s) {', '.join(sorted(unknown))}", where="query")
        req = models.JobRequest.model_validate({**query, "fallbacks": fallbacks})
        options = self._options(req, request, caller)
        async with self._uploaded(request) as path:
            with _named(path, "body"):
                return await self.client.submit_file(path, req.signature, **options)

    @contextlib.asynccontextmanager
    async def _uploaded(self, request: Request) -> AsyncIterator[str]:
        """The request body streamed to a temporary file (at most TIDYQ_API_UPLOAD_MAX_BYTES), removed after."""
        fd, path = tempfile.mkstemp(prefix="tidyq-upload-", suffix=".jsonl")
        try:
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.settings.api_upload_max_bytes:
                        raise Problem(413, "too-large", f"the upload is over {self.settings.api_upload_max_bytes} "
                                      "bytes (TIDYQ_API_UPLOAD_MAX_BYTES)", field="body")
                    fh.write(chunk)
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def _view(self, job: AsyncJob, wait: float | None) -> dict:
        """The status; after ``wait`` seconds at most (or the job's end), with a predict's outputs."""
        store = self.client.store
        status = await store.wait_end(job.id, wait) if wait else await store.status(job.id)
        view = status.model_dump(mode="json")
        if wait and view["kind"] == "predict" and status.status.terminal:
            row = await store.get_result(job.id, PREDICT_ITEM_ID)
            rows = [row] if row else []
            try:
                view["outputs"] = predict_outputs(job.id, rows, JobState(view["status"]))
            except JobFailed as exc:
                view["output_error"] = exc.error or {"type": "JobEnded", "message": str(exc)}
        return view

    async def list_jobs(self, request: Request) -> Response:
        caller = self.caller(request)
        statuses = [s.strip() for s in request.query_params.get("status", "").split(",") if s.strip()]
        for s in statuses:
            if s not in {st.value for st in JobState}:
                raise BadInput(f"unknown state {s!r}; expected: {', '.join(st.value for st in JobState)}",
                               where="query parameter 'status'")
        kind = request.query_params.get("kind") or None
        if kind not in (None, "predict", "batch", "optimize"):
            raise BadInput(f"unknown kind {kind!r}; expected predict, batch or optimize",
                           where="query parameter 'kind'")
        limit = self._number(request, "limit", int, default=50, low=1, high=MAX_PAGE)
        jobs = await self.client.store.list_jobs(statuses=statuses or None, kind=kind, limit=limit,
                                                 tenant=caller.tenant)
        return JSONResponse({"jobs": [j.model_dump(mode="json") for j in jobs]})

    async def get_job(self, request: Request) -> Response:
        _, status = await self.visible_job(request, self.caller(request))
        return JSONResponse(status)

    async def results(self, request: Request) -> Response:
        job, _ = await self.visible_job(request, self.caller(request))
        fmt = request.query_params.get("format")
        if fmt not in (None, "json", "jsonl"):
            raise BadInput(f"expected json or jsonl, got {fmt!r}", where="query parameter 'format'")
        accept = request.headers.get("accept", "")
        if fmt == "jsonl" or (fmt is None and any(t in accept for t in JSONL_TYPES)):
            follow = request.query_params.get("follow", "true").lower() not in ("false", "0", "no")
            return StreamingResponse(self._jsonl(job, follow), media_type="application/x-ndjson")
        offset = self._number(request, "offset", int, default=0, low=0, high=None)
        limit = self._number(request, "limit", int, default=100, low=1, high=MAX_PAGE)
        rows, nxt, state, done = await self.client.store.results_page(job.id, offset, limit)
        return JSONResponse({"results": rows, "next_offset": nxt, "status": state.value, "done": done})

    async def _jsonl(self, job: AsyncJob, follow: bool) -> AsyncIterator[bytes]:
        async for row in job.results(follow=follow):
            yield (json.dumps(row, ensure_ascii=False) + "\n").encode()

    async def cancel(self, request: Request) -> Response:
        job, _ = await self.visible_job(request, self.caller(request))
        return JSONResponse({"id": job.id, "status": await job.cancel()})

    async def retry(self, request: Request) -> Response:
        job, _ = await self.visible_job(request, self.caller(request))
        again = await self.client.retry(job.id)
        if again is None:
            return Response(status_code=204)
        return JSONResponse(await again.status(), status_code=201,
                            headers={"Location": f"{request.scope.get('root_path', '')}/jobs/{again.id}"})

    async def programs(self, request: Request) -> Response:
        self.caller(request)
        from producers.mcp_server import registered_programs

        listing = await asyncio.to_thread(registered_programs, self.settings)
        return JSONResponse(listing.model_dump(mode="json"))

    async def estimate(self, request: Request) -> Response:
        """`tidyq batch --estimate`: rows (JSON) or a JSONL upload -> the expected cost; enqueues nothing."""
        self.caller(request)
        from producers.estimate import estimate_file

        media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if media in JSONL_TYPES:
            unknown = set(request.query_params) - {"signature", "program", "backend", "model"}
            if unknown:
                raise BadInput(f"unknown parameter(s) {', '.join(sorted(unknown))}", where="query")
            req = models.JobRequest.model_validate(dict(request.query_params))
            uploaded, label = self._uploaded(request), "body"
        elif media in ("application/json", ""):
            req = models.JobRequest.model_validate(await self._json_body(request))
            if req.rows is None:
                raise BadInput("give the batch's 'rows' (or send a JSONL upload)", where="rows")
            uploaded, label = _rows_file(req.rows), "rows"
        else:
            raise Problem(415, "unsupported-media-type", f"send application/json or a JSONL upload "
                          f"({', '.join(JSONL_TYPES)}), not {media}", field="Content-Type")
        target = await asyncio.to_thread(self.client.sync.resolve_target, req.signature, req.program, req.backend,
                                         req.model)
        async with uploaded as path:
            with _named(path, label):
                report = await asyncio.to_thread(estimate_file, path, signature=req.signature, program=req.program,
                                                 model=target["model"], backend=target["backend"],
                                                 settings=self.settings)
        return JSONResponse({**report, "file": label})

    async def queues(self, request: Request) -> Response:
        """`tidyq queues --json`: one snapshot of the queues, workers and running jobs. Operator tokens only."""
        self._fleet(request)
        window = self._number(request, "window", int, default=60, low=10, high=600)
        from producers.ops_state import OpsReader

        reader = OpsReader(self._redis(), heartbeat_interval=self.settings.heartbeat_interval)
        return JSONResponse(await asyncio.to_thread(lambda: reader.snapshot(window=window).to_json()))

    async def breakers(self, request: Request) -> Response:
        """`tidyq breaker status --json`: every known target's breaker. Operator tokens only."""
        self._fleet(request)
        from shared.breaker import breaker_states

        return JSONResponse(await asyncio.to_thread(breaker_states, self._redis()))

    async def reset_breaker(self, request: Request) -> Response:
        """`tidyq breaker reset TARGET`: close a known target's breaker now. Operator tokens only."""
        self._fleet(request)
        from shared.breaker import known_target, reset_breaker

        def run() -> dict:
            client = self._redis()
            return reset_breaker(client, known_target(client, request.path_params["target"], where="target"))

        return JSONResponse(await asyncio.to_thread(run))

    async def budget(self, request: Request) -> Response:
        """`tidyq budget`: spend per tenant and job for one UTC day; a tenant token sees only its own tenant."""
        caller = self.caller(request)
        from shared.budget import check_day, tenant_budgets

        tenant = request.query_params.get("tenant") or None
        day = check_day(request.query_params.get("day") or None, where="day")
        if caller.tenant is not None:
            if tenant not in (None, caller.tenant):
                raise Problem(403, "forbidden", f"this token sees tenant {caller.tenant!r} only", field="tenant")
            tenant = caller.tenant
        budgets = tenant_budgets(self._redis(), self.settings)
        return JSONResponse({"tenants": await asyncio.to_thread(budgets.report, tenant, day)})

    async def _registry_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A registry method in a thread (MLflow calls block), its BadInput naming the API's fields."""
        from shared.registry import get_registry

        def run() -> Any:
            return fn(get_registry(self.settings), *args, **kwargs)

        try:
            return await asyncio.to_thread(run)
        except BadInput as exc:
            problem = bad_input(exc)
            where = problem.field or ""
            if where == "program" and "has no version" in problem.detail:
                problem.field = "candidate"  # the version named in the request does not exist
            elif where == "program" or where.startswith("program "):
                problem.field = "name" if "no registered model" in problem.detail else "program"
            else:
                problem.field = REGISTRY_FIELDS.get(where, where) or None
            if "no registered model" in problem.detail:
                problem.status, problem.kind = 404, "not-found"
            raise problem from None

    async def rollout_status(self, request: Request) -> Response:
        """`tidyq rollout NAME`: the state and per-version counters."""
        self.caller(request)
        name = check_name(request.path_params["name"], where="name")
        status = await self._registry_call(lambda reg: reg.status(name))
        status["versions"] = {str(k): v for k, v in status["versions"].items()}
        return JSONResponse(status)

    async def change_rollout(self, request: Request) -> Response:
        """POST /programs/{name}/rollout | rollback | promote: as the CLI commands of the same name."""
        self._operator(request)
        action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        options: dict[str, Any] = {}
        if action == "rollout":
            body = models.RolloutRequest.model_validate(await self._json_body(request))
            options = {"candidate": body.candidate, "percent": body.percent}
        state, warning = await self._registry_call(lambda reg: reg.change_rollout(
            action, request.path_params["name"], **options))
        return JSONResponse({**state.as_dict(), "warning": warning})

    async def register(self, request: Request) -> Response:
        """`tidyq register pkg.module:Name --name NAME`: an import path only (no code upload)."""
        self._operator(request)
        from producers.registering import register

        body = models.RegisterRequest.model_validate(await self._json_body(request))
        uri = await self._registry_call(lambda reg: register(body.program, body.name, body.state, state_where="state",
                                                             files=False, settings=self.settings))
        name, _, version = uri[len("models:/"):].rpartition("/")
        return JSONResponse({"uri": uri, "name": name, "version": int(version)}, status_code=201)


@contextlib.asynccontextmanager
async def _rows_file(rows: list[Any]) -> AsyncIterator[str]:
    """JSON rows as a temporary JSONL file (what `tidyq batch --estimate` reads), removed after."""
    fd, path = tempfile.mkstemp(prefix="tidyq-rows-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def _named(path: str, label: str) -> Iterator[None]:
    """A BadInput about the server's temporary file names what the caller sent instead: ``body:7`` for
    line 7 of an upload, ``rows[6]`` for the 7th JSON row."""
    try:
        yield
    except BadInput as exc:
        problem = bad_input(exc)
        if label == "rows":
            def row(match: re.Match) -> str:
                return f"rows[{int(match.group(1)) - 1}]"

            problem.field = re.sub(re.escape(path) + r":(\d+)", row, problem.field or "") or None
            problem.detail = re.sub(re.escape(path) + r":(\d+)", row, problem.detail)
        problem.detail = problem.detail.replace(path, label)
        problem.field = (problem.field or "").replace(path, label) or None
        raise problem from None


def validation_problem(exc: ValidationError) -> Problem:
    """A pydantic error on the request body: the first error's location as the field."""
    first = exc.errors()[0]
    field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(first["loc"]))
    return Problem(422, "bad-input", first["msg"], field=field or "body",
                   errors=[{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()[:20]])
