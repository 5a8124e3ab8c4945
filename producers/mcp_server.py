"""tidyq as an MCP server: agents submit and follow jobs as tools (`tidyq mcp`).

Built on the official SDK (mcp 2.x ``MCPServer``). Every tool goes through ``producers.Client``
only: it validates and enqueues like the CLI, and reads status and results from the job store.
No tool ever calls a model backend; the workers do.

Shape of the tools, for agents:
- ``predict`` waits for one answer, but never longer than TIDYQ_MCP_MAX_WAIT_SECONDS (50 s by
  default; MCP clients give up near 60 s). It reports progress while it waits and, when time is
  up, returns ``done: false`` with the job id to follow instead of failing.
- ``submit_batch`` enqueues inline rows or a JSONL file under the configured root; ``job_status``
  (optionally waiting, with progress) and ``job_results`` (pages with a cursor) follow the job.
- Every expected failure (bad signature, unknown field, unknown job, path outside the root,
  Redis down) comes back as a tool error naming what to fix; the server keeps serving.

Jobs map one to one onto MCP tasks (io.modelcontextprotocol/tasks) once the SDK serves that
extension: a job id is a task id, job states are task states, job_results is the task result.
"""

import base64
import binascii
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from shared.causes import describe, one_line
from shared.config import Settings, get_settings
from shared.errors import BadInput, ConfigurationError, TidyqError
from shared.jobs import ErrorInfo, ItemResult, JobState, JobStatus

log = logging.getLogger("tidyq.mcp")

SERVER_NAME = "tidyq"
MAX_PAGE = 1000
INSTRUCTIONS = """tidyq runs DSPy programs on a job queue. A program is a DSPy signature such as
'question -> answer' (inputs -> outputs) or a registered program URI (models:/NAME/N, see
list_programs). Use predict for one input (it waits and returns the outputs, or a job_id to follow
if it takes longer). Use submit_batch for many inputs (inline rows or a JSONL file path), then
job_status (wait_seconds to wait with progress) and job_results (pass next_cursor back until
done is true). cancel_job stops a job; finished results are kept. backend 'mock' answers
instantly with placeholder text, for trying things out."""

JobId = Annotated[str, Field(min_length=1, max_length=128,
                             description="The job id returned when the job was submitted.")]
Signature = Annotated[str | None, Field(description="DSPy signature 'inputs -> outputs', e.g. 'question -> answer' or "
                                                    "'context, question -> answer'. Give this or program.")]
Program = Annotated[str | None, Field(description="A registered program URI instead of a signature, e.g. "
                                                  "models:/qa/3 or models:/qa@champion (see list_programs).")]
Backend = Annotated[str | None, Field(description="mock, direct, bedrock, gateway or auto (default: the server's "
                                                  "TIDYQ_BACKEND). 'mock' gives instant placeholder answers.")]
Model = Annotated[str | None, Field(description="Model id for the backend, e.g. openai/gpt-4o-mini (default: the "
                                                "server's TIDYQ_MODEL).")]
Fallback = Annotated[list[str] | None, Field(description="Targets tried after the job's own, each 'BACKEND' or "
                                                         "'BACKEND:MODEL'.")]
IdempotencyKey = Annotated[str | None, Field(max_length=256, description="Resubmitting with the same key returns "
                                                                         "the first job instead of a new one.")]
ItemCache = Annotated[bool, Field(description="false: run every item; none is answered from (or written to) the "
                                              "item-level result cache (a repeat of the same inputs costs a call).")]


def wait_field(default: float, what: str) -> Any:
    return Field(default, ge=0, le=3600, description=f"Seconds to wait for {what} (capped by the server, 50 s by "
                                                     "default, so the call returns before MCP clients time out).")


# --- structured outputs ---------------------------------------------------------------------------

class PredictResult(BaseModel):
    """The answer of one prediction, or where to follow it."""

    job_id: str
    status: JobState
    done: bool = Field(description="True when the job has ended; false: follow it with job_status/job_results.")
    outputs: dict[str, Any] | None = Field(None, description="Output fields of the signature when it succeeded.")
    error: ErrorInfo | None = None
    next_step: str | None = None


class Counts(BaseModel):
    total: int
    succeeded: int
    failed: int


class Submitted(BaseModel):
    """A job was enqueued (or, with a matching idempotency key, found)."""

    job_id: str
    kind: str
    status: JobState
    counts: Counts
    done: bool
    existing: bool = Field(False, description="True when the idempotency key matched an earlier job.")
    next_step: str | None = None


class JobView(JobStatus):
    done: bool = Field(description="True when the job has ended (completed, failed or cancelled).")
    next_step: str | None = None


class ResultsPage(BaseModel):
    """A page of per-item results in the order they finished."""

    job_id: str
    status: JobState
    results: list[ItemResult]
    next_cursor: str | None = Field(description="Pass back as cursor for the next page; null when done.")
    done: bool = Field(description="True when the job has ended and every result has been returned.")
    read_so_far: int = Field(description="Results returned up to and including this page.")
    total: int


class Cancelled(BaseModel):
    job_id: str
    status: JobState
    counts: Counts
    note: str


class BatchRow(BaseModel):
    """One input: {"custom_id": "...", "inputs": {"question": "..."}}."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str | int | None = Field(None, description="Your id for this row (unique in the batch); default: "
                                                          "its 1-based position.")
    inputs: dict[str, Any] = Field(description="One value per input field of the signature.")


class TrainExample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any]
    outputs: dict[str, Any]


class ProgramInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    uri: str | None = None
    versions: list[Any] = Field(default_factory=list)
    aliases: dict[str, Any] = Field(default_factory=dict)
    rollout: dict[str, Any] | None = Field(None,
                                           description="Live traffic split, e.g. {'champion': 90, 'challenger': 10}.")


class ProgramList(BaseModel):
    programs: list[ProgramInfo]
    note: str | None = None


# --- helpers --------------------------------------------------------------------------------------

@contextmanager
def tool_errors() -> Iterator[None]:
    """Our typed errors -> a ToolError the agent can read and act on (never a crashed server).
    Anything else (a Redis or MLflow failure, or our bug) is logged with its traceback and still
    answered in one line with its cause, never the SDK's bare "Error executing tool X"."""
    try:
        yield
    except ToolError:
        raise
    except BadInput as exc:  # includes JobNotFound
        raise ToolError(str(exc)) from None
    except ConfigurationError as exc:
        raise ToolError(f"server configuration: {exc}") from None
    except TimeoutError as exc:
        raise ToolError(f"timed out: {exc}") from None
    except TidyqError as exc:
        raise ToolError(str(exc)) from None
    except Exception as exc:
        import redis

        if isinstance(exc, redis.exceptions.ConnectionError):
            raise ToolError("cannot reach the queue's Redis (the tidyq deployment is down or TIDYQ_REDIS_URL is "
                            f"wrong): {one_line(exc)}; try again later or ask the operator") from None
        # anything else still gets its cause (never the SDK's bare "Error executing tool X")
        log.exception("tool failed: %s", one_line(exc))
        cause = describe(exc)
        raise ToolError(f"{cause}; try again later" if cause else f"internal error: {one_line(exc)}") from None


def encode_cursor(job_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{job_id}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, job_id: str) -> int:
    bad = ToolError("cursor: not a cursor of this job; pass the next_cursor of the previous job_results page "
                    "for the same job_id, or omit it to start from the first result")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    owner, _, offset = text.rpartition(":")
    if owner != job_id or not offset.isdigit():
        raise bad
    return int(offset)


def resolve_under_root(path: str, root: str | None) -> Path:
    """A user-given path as a real file inside ``root`` (symlinks followed), or ToolError.
    Relative paths are relative to the root."""
    if not root:
        raise ToolError("path: reading files is disabled on this server (no root directory configured: "
                        "TIDYQ_MCP_ROOT or `tidyq mcp --root DIR`); send the rows inline instead")
    base = Path(root).expanduser().resolve()
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    real = candidate.resolve()
    if not real.is_relative_to(base):
        raise ToolError(f"path: {path!r} is outside the server's root directory {str(base)!r}; "
                        "give a path under it (relative paths are relative to it)")
    if not real.is_file():
        raise ToolError(f"path: {path!r} is not a file under {str(base)!r}")
    return real


def _counts(status: dict) -> Counts:
    return Counts(**status["counts"])


def _follow_hint(job_id: str, status: str) -> str:
    return (f"job is still {status}: call job_status(job_id={job_id!r}, wait_seconds=50) until done, "
            f"then job_results(job_id={job_id!r})")


# --- the server -----------------------------------------------------------------------------------

class TidyqTools:
    """The tool implementations, holding one producers.Client (built on first use)."""

    def __init__(self, *, settings: Settings | None = None, redis_url: str | None = None, root: str | None = None,
                 client: Any = None):
        self.settings = settings or get_settings()
        self.redis_url = redis_url
        self.root = root if root is not None else self.settings.mcp_root
        self.max_wait = max(0.0, float(self.settings.mcp_max_wait_seconds))
        self._client = client

    @property
    def client(self):
        if self._client is None:
            from producers.client import Client

            self._client = Client(self.redis_url, settings=self.settings)
        return self._client

    async def _run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """The Client is synchronous (redis-py): run it off the event loop."""
        with tool_errors():
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def _progress(self, ctx: Context | None, done: float, total: float, message: str) -> None:
        if ctx is None:
            return
        try:
            await ctx.report_progress(done, total, message)
        except Exception:  # no request context, or the client went away: progress is best effort
            log.debug("progress report not delivered", exc_info=True)

    async def _follow(self, ctx: Context | None, job, wait_seconds: float) -> dict:
        """Poll the job's status until it ends or the (capped) wait is over, reporting progress
        (items done of total) each time it moves. Returns the last status."""
        deadline = time.monotonic() + max(0.0, min(wait_seconds, self.max_wait))
        reported, poll = -1, 0.05
        while True:
            status = await self._run(job.status)
            c = status["counts"]
            done = c["succeeded"] + c["failed"]
            if done > reported:
                await self._progress(ctx, done, c["total"],
                                     f"job {job.id} {status['status']}: {done}/{c['total']} items done")
                reported = done
            left = deadline - time.monotonic()
            if JobState(status["status"]).terminal or left <= 0:
                return status
            await anyio.sleep(min(poll, left))
            poll = min(0.5, poll * 1.5)

    def _job(self, job_id: str):
        return self.client.job(job_id)

    # --- tools ------------------------------------------------------------------------------------
    async def predict(
        self,
        inputs: Annotated[dict[str, Any],
                          Field(description="One value per input field, e.g. {'question': 'What is 2+2?'}.")],
        signature: Signature = None,
        program: Program = None,
        backend: Backend = None,
        model: Model = None,
        fallback: Fallback = None,
        wait_seconds: Annotated[float, wait_field(45.0, "the answer")] = 45.0,
        idempotency_key: IdempotencyKey = None,
        item_cache: ItemCache = True,
        ctx: Context | None = None,
    ) -> PredictResult:
        """Run a DSPy program on one input and return its outputs.

        Give a signature ('question -> answer') or a registered program, and the inputs. Waits for
        the answer (reporting progress); if it takes longer than wait_seconds, returns done=false
        with the job_id: then call job_status(job_id, wait_seconds=50) and job_results(job_id).
        """
        job = await self._run(self.client.submit_predict, signature, inputs, backend=backend, model=model,
                              program=program, fallbacks=fallback or None, idempotency_key=idempotency_key,
                              item_cache=item_cache)
        await self._progress(ctx, 0, 1, f"job {job.id} queued")
        status = await self._follow(ctx, job, wait_seconds)
        state = JobState(status["status"])
        if not state.terminal:
            return PredictResult(job_id=job.id, status=state, done=False, next_step=_follow_hint(job.id, state.value))
        rows = await self._run(lambda: list(job.results(follow=False)))
        row = rows[0] if rows else None
        if row and row["status"] == "succeeded":
            return PredictResult(job_id=job.id, status=state, done=True, outputs=row["outputs"])
        error = ErrorInfo(**row["error"]) if row and row.get("error") else (
            ErrorInfo(type="JobFailed", message=status.get("error") or f"job {state.value}"))
        return PredictResult(job_id=job.id, status=state, done=True, error=error,
                             next_step="the item failed: read error; fix the inputs or choose another backend/model "
                                       "and call predict again" if state is not JobState.CANCELLED else None)

    async def submit_batch(
        self,
        signature: Signature = None,
        program: Program = None,
        rows: Annotated[list[BatchRow] | None,
                        Field(description="Inline inputs, one per item. Give rows or path.")] = None,
        path: Annotated[str | None, Field(description="A JSONL file on the server, one {\"custom_id\", \"inputs\"} per "
                                                      "line, under the server's root directory (relative paths are "
                                                      "relative to it). Give rows or path.")] = None,
        backend: Backend = None,
        model: Model = None,
        fallback: Fallback = None,
        chunk_size: Annotated[int | None, Field(ge=1, le=10000, description="Items per worker task (default: "
                                                                             "server setting).")] = None,
        idempotency_key: IdempotencyKey = None,
        wait_seconds: Annotated[float, wait_field(0.0, "the batch to finish")] = 0.0,
        item_cache: ItemCache = True,
        ctx: Context | None = None,
    ) -> Submitted:
        """Submit many inputs as one batch job and return its job_id at once.

        Every row is checked before anything is enqueued (an error names the row and field).
        Follow with job_status(job_id, wait_seconds=50) and read results with job_results(job_id),
        passing next_cursor back until done is true.
        """
        if (rows is None) == (path is None):
            raise ToolError("give exactly one of rows (inline inputs) or path (a JSONL file under the server's root)")
        kwargs = dict(backend=backend, model=model, program=program, fallbacks=fallback or None,
                      idempotency_key=idempotency_key, chunk_size=chunk_size, item_cache=item_cache)
        if rows is not None:
            if not rows:
                raise ToolError("rows: no items; give at least one {'inputs': {...}}")
            plain = [row.model_dump(exclude_none=True) for row in rows]
            job = await self._run(self.client.submit_batch, plain, signature, **kwargs)
        else:
            assert path is not None  # exactly one of rows or path, checked above
            real = resolve_under_root(path, self.root)
            job = await self._run(self.client.submit_file, real, signature, **kwargs)
        status = await self._follow(ctx, job, wait_seconds) if wait_seconds > 0 else await self._run(job.status)
        done = JobState(status["status"]).terminal
        return Submitted(job_id=job.id, kind=status["kind"], status=status["status"], counts=_counts(status), done=done,
                         existing=bool(getattr(job, "existing", False)),
                         next_step=(f"read the results with job_results(job_id={job.id!r})" if done
                                    else _follow_hint(job.id, status["status"])))

    async def job_status(self, job_id: JobId,
                         wait_seconds: Annotated[float, wait_field(0.0, "the job to end")] = 0.0,
                         ctx: Context | None = None) -> JobView:
        """A job's state (queued, running, completed, failed, cancelling, cancelled), item counts
        and timestamps. With wait_seconds > 0, waits for the job to end, reporting progress; it
        returns early with done=false when the wait is over (call again)."""
        job = await self._run(self._job, job_id)
        status = await self._follow(ctx, job, wait_seconds) if wait_seconds > 0 else await self._run(job.status)
        done = JobState(status["status"]).terminal
        hint = (f"read the results with job_results(job_id={job_id!r})" if done
                else _follow_hint(job_id, status["status"]))
        return JobView(**status, done=done, next_step=hint)

    async def job_results(
        self,
        job_id: JobId,
        cursor: Annotated[str | None,
                          Field(description="next_cursor from the previous page; omit for the first page.")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE, description="Results per page.")] = 100,
    ) -> ResultsPage:
        """One page of a job's per-item results (custom_id, status, outputs, error, backend,
        model, latency_ms, cached, attempts), in the order they finished. Call again with
        next_cursor until done is true; a page can be short while the job is still running."""
        offset = decode_cursor(cursor, job_id) if cursor else 0
        rows, nxt, state, end = await self._run(self.client.store.results_page, job_id, offset, limit)
        total = (await self._run(self.client.store.status, job_id)).counts.total
        return ResultsPage(job_id=job_id, status=state, results=[ItemResult.model_validate(r) for r in rows],
                           next_cursor=None if end else encode_cursor(job_id, nxt), done=end, read_so_far=nxt,
                           total=total)

    async def cancel_job(self, job_id: JobId) -> Cancelled:
        """Stop a job: pending items are not run; results already finished are kept and can still
        be read with job_results. Cancelling an ended job changes nothing."""
        job = await self._run(self._job, job_id)
        before = JobState((await self._run(job.status))["status"])
        state = JobState(await self._run(job.cancel))
        status = await self._run(job.status)
        if before.terminal:
            note = f"nothing to cancel: the job had already ended ({before.value})"
        elif state is JobState.CANCELLING:
            note = "pending items will not run; running ones finish first, then job_status shows 'cancelled'"
        else:
            note = f"{state.value}; results finished before the cancel are kept (job_results)"
        return Cancelled(job_id=job_id, status=status["status"], counts=_counts(status), note=note)

    async def list_programs(self) -> ProgramList:
        """Registered programs usable as program= in predict/submit_batch: names, versions,
        aliases (e.g. champion) and the live rollout split between versions."""
        return await self._run(registered_programs, self.settings)  # an MLflow failure: a ToolError with its cause

    async def submit_optimize(
        self,
        name: Annotated[str, Field(min_length=1, max_length=128,
                                   description="Registered model name the optimized program is stored under "
                                               "(models:/NAME/N).")],
        signature: Signature = None,
        program: Program = None,
        trainset: Annotated[list[TrainExample] | None, Field(description="Inline examples {'inputs': {...}, "
                                                                         "'outputs': {...}}. Give trainset or "
                                                                         "trainset_path.")] = None,
        trainset_path: Annotated[str | None, Field(description="JSONL of {'inputs', 'outputs'} lines under the "
                                                               "server's root directory.")] = None,
        valset: Annotated[list[TrainExample] | None, Field(description="Optional inline validation examples.")] = None,
        valset_path: Annotated[str | None, Field(description="Optional validation JSONL under the root.")] = None,
        optimizer: Annotated[str, Field(description="labeled-fewshot, bootstrap-fewshot, bootstrap-random-search, "
                                                    "mipro-v2, copro, simba or gepa.")] = "bootstrap-fewshot",
        optimizer_settings: Annotated[dict[str, Any] | None,
                                      Field(description="Optimizer options, "
                                                        "e.g. {'max_bootstrapped_demos': 4}.")] = None,
        metric: Annotated[str, Field(description="exact_match, contains, f1, numeric, or an allow-listed "
                                                 "'package.module:function'.")] = "exact_match",
        kind: Annotated[Literal["predict", "chain_of_thought"],
                        Field(description="Program type to optimize.")] = "predict",
        backend: Backend = None,
        model: Model = None,
        time_limit: Annotated[float | None, Field(gt=0, description="Stop optimizing after this many seconds.")] = None,
    ) -> Submitted:
        """Start an optimize job: a DSPy optimizer tunes the program on the trainset and the best
        program is registered as a new version (models:/NAME/N). Returns the job_id at once;
        follow it with job_status(job_id, wait_seconds=50); its single result holds model_uri
        and the scores (job_results)."""
        submit = getattr(self.client, "submit_optimize", None)
        if submit is None:
            raise ToolError("optimize jobs are not available on this server; use predict or submit_batch")
        if (trainset is None) == (trainset_path is None):
            raise ToolError("give exactly one of trainset (inline examples) "
                            "or trainset_path (a JSONL file under the root)")
        if valset is not None and valset_path is not None:
            raise ToolError("give valset or valset_path, not both")
        train: Any = ([ex.model_dump() for ex in trainset] if trainset is not None
                      else resolve_under_root(trainset_path or "", self.root))
        val: Any = ([ex.model_dump() for ex in valset] if valset is not None
                    else resolve_under_root(valset_path, self.root) if valset_path else None)
        job = await self._run(submit, name=name, trainset=train, valset=val, signature=signature, program=program,
                              kind=kind, optimizer=optimizer, settings=optimizer_settings, metric=metric,
                              backend=backend, model=model, time_limit=time_limit)
        status = await self._run(job.status)
        return Submitted(job_id=job.id, kind=status["kind"], status=status["status"], counts=_counts(status),
                         done=JobState(status["status"]).terminal, next_step=_follow_hint(job.id, status["status"]))


# --- room for the MCP tasks extension (io.modelcontextprotocol/tasks) -----------------------------
# mcp 2.3 ships the Task types (2025-11-25) but no server handling of task-augmented tools/call,
# tasks/get, tasks/result, tasks/list or tasks/cancel. When it does, a job is a task one to one:
# tools/call with a `task` field submits and returns CreateTaskResult(job_to_task(status)),
# tasks/get -> job_status, tasks/cancel -> cancel_job, tasks/result -> the tool's own result.

_TASK_STATUS = {JobState.QUEUED: "working", JobState.RUNNING: "working", JobState.CANCELLING: "working",
                JobState.COMPLETED: "completed", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}


def job_to_task(status: dict, *, poll_interval_ms: int = 1000):
    """A job status dict as the MCP Task it will be (the job id is the task id)."""
    from mcp_types import Task

    c, ts = status["counts"], status["timestamps"]
    state = JobState(status["status"])
    done = c["succeeded"] + c["failed"]
    expires = status.get("expires_in_seconds")
    return Task(task_id=status["id"], status=_TASK_STATUS[state],
                status_message=f"{state.value}: {done}/{c['total']} items done ({c['failed']} failed)",
                created_at=ts["created"], last_updated_at=ts.get("finished") or ts.get("started") or ts["created"],
                ttl=None if expires is None else int(expires * 1000), poll_interval=poll_interval_ms)


MAX_PROGRAMS = 200


def registered_programs(settings: Settings) -> ProgramList:
    """Programs in the MLflow registry (shared.registry) with their versions, aliases and the
    live rollout split (Redis, the routing source of truth)."""
    if not settings.mlflow_tracking_uri:
        return ProgramList(programs=[], note="no program registry on this server (TIDYQ_MLFLOW_TRACKING_URI is not "
                                             "set); use a signature instead")
    from shared.registry import get_registry

    registry = get_registry(settings)
    lister = getattr(registry, "list_programs", None)  # the registry's own listing, once it has one
    if lister is not None:
        entries = [e.model_dump(mode="json") if isinstance(e, BaseModel) else dict(e) for e in lister()]
        programs = [ProgramInfo.model_validate(e) for e in entries]
    else:
        programs = []
        for model in registry.client.search_registered_models(max_results=MAX_PROGRAMS):
            versions = sorted(int(v.version) for v in registry.client.search_model_versions(f"name='{model.name}'"))
            status = registry.status(model.name)
            aliases = {alias: int(v) for alias, v in (getattr(model, "aliases", None) or {}).items()}
            for alias in ("live", "candidate"):
                if status.get(alias) is not None:
                    aliases[alias] = status[alias]
            rollout = None
            if status.get("live") is not None:
                rollout = {"live": status["live"], "candidate": status.get("candidate"),
                           "candidate_percent": status.get("percent", 0.0)}
            programs.append(ProgramInfo(name=model.name, uri=f"models:/{model.name}@live", versions=versions,
                                        aliases=aliases, rollout=rollout))
    return ProgramList(programs=programs, note=None if programs else "no programs registered yet")


READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def build_server(*, settings: Settings | None = None, redis_url: str | None = None, root: str | None = None,
                 auth: AuthSettings | None = None, token_verifier: TokenVerifier | None = None,
                 client: Any = None) -> MCPServer:
    """The MCP server with tidyq's tools. ``auth``/``token_verifier`` protect the HTTP transport."""
    tools = TidyqTools(settings=settings, redis_url=redis_url, root=root, client=client)
    server = MCPServer(SERVER_NAME, title="tidyq job queue", instructions=INSTRUCTIONS, version=_version(),
                       auth=auth, token_verifier=token_verifier)
    server.add_tool(tools.predict, name="predict", title="Run a program on one input",
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    server.add_tool(tools.submit_batch, name="submit_batch", title="Submit a batch job",
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    server.add_tool(tools.job_status, name="job_status", title="Job status", annotations=READ_ONLY)
    server.add_tool(tools.job_results, name="job_results", title="Job results (paged)", annotations=READ_ONLY)
    server.add_tool(tools.cancel_job, name="cancel_job", title="Cancel a job",
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                                open_world_hint=False))
    server.add_tool(tools.list_programs, name="list_programs", title="Registered programs", annotations=READ_ONLY)
    server.add_tool(tools.submit_optimize, name="submit_optimize", title="Submit an optimize job",
                    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True))
    server.tidyq = tools  # type: ignore[attr-defined]  # tests and the CLI reach the Client through it
    return server


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tidyq")
    except Exception:
        return "0"
