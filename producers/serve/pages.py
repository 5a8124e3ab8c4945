"""The jobs page's routes: HTML rendered on the server, and the JSON its script polls.

Handlers are plain (sync) functions: Starlette runs them in its thread pool, so a slow Redis
read never blocks the event loop that also serves the REST API. Every page works without
JavaScript; static/live.js only refreshes the numbers in place.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from producers.job_overview import JobsReader
from producers.ops_state import OpsReader
from producers.query_params import number_param
from producers.serve import display
from shared.config import Settings
from shared.store import JobNotFound

HERE = Path(__file__).parent
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FAILED_PAGE_DEFAULT, FAILED_PAGE_MAX = 50, 500
JOBS_DEFAULT, JOBS_MAX = 25, 200

templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        trim_blocks=True, lstrip_blocks=True)


class QueryError(ValueError):
    """A query parameter is wrong: answered 400 naming it."""


@dataclass
class Context:
    """What every handler reads from: settings and the two Redis readers (one per app)."""

    settings: Settings
    jobs: JobsReader
    ops: OpsReader
    mlflow_base: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        url = settings.redis_url or settings.default_redis_url
        return cls(settings, JobsReader.from_settings(url), OpsReader.from_settings(url),
                   display.mlflow_ui_base(settings))


def _ctx(request: Request) -> Context:
    return request.app.state.tidyq


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    return number_param(request.query_params, name, int, default=default, low=low, high=high,
                        error=lambda message, where: QueryError(f"{where} {message}"))


def overview(ctx: Context, limit: int) -> dict:
    """Everything page ``/`` shows: jobs, queues, workers, breakers."""
    snap = ctx.ops.snapshot(jobs=False)
    # running jobs first, however old (the ones workers touched lately), then the newest others
    running = ctx.jobs.rows_of([j.id for j in ctx.ops.running_jobs(limit=limit)], with_errors=True)
    seen = {r.id for r in running}
    rows = running + [r for r in ctx.jobs.rows(limit=limit, with_errors=True) if r.id not in seen]
    rows = rows[:limit]
    return {"updated": time.strftime("%H:%M:%S", time.gmtime(snap.at)) + " UTC",
            "jobs": [display.job_row(r, ctx.mlflow_base) for r in rows],
            "queues": [display.queue_row(q) for q in snap.queues],
            "workers": [display.worker_row(w) for w in snap.workers],
            "breakers": [display.breaker_row(b) for b in snap.breakers]}


def job_detail(ctx: Context, job_id: str) -> dict:
    row = ctx.jobs.row(job_id)
    return {"updated": time.strftime("%H:%M:%S", time.gmtime()) + " UTC",
            "jobs": [display.job_row(row, ctx.mlflow_base)], "errors": display.error_rows(row.error_types)}


def _html(name: str, http_status: int = 200, **values) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**values), status_code=http_status)


def _problem(request: Request, status_code: int, message: str) -> Response:
    if request.url.path.endswith(".json"):
        return JSONResponse({"error": message}, status_code=status_code)
    return _html("error.html", status_code, message=message, code=status_code)


def guarded(handler):
    """Turns the expected failures into a clear page or JSON error instead of a 500."""

    def run(request: Request) -> Response:
        try:
            return handler(request)
        except QueryError as exc:
            return _problem(request, 400, str(exc))
        except JobNotFound as exc:
            return _problem(request, 404, str(exc))
        except redis.RedisError as exc:
            return _problem(request, 503, f"cannot reach Redis: {exc}")

    run.__name__ = handler.__name__
    return run


@guarded
def index(request: Request) -> Response:
    ctx = _ctx(request)
    limit = int_param(request, "limit", JOBS_DEFAULT, 1, JOBS_MAX)
    return _html("index.html", poll=f"/ui/state.json?limit={limit}", refresh=ctx.settings.ui_refresh_seconds,
                 **overview(ctx, limit))


@guarded
def state_json(request: Request) -> Response:
    ctx = _ctx(request)
    return JSONResponse(overview(ctx, int_param(request, "limit", JOBS_DEFAULT, 1, JOBS_MAX)))


def _job_id(request: Request) -> str:
    job_id = request.path_params["job_id"]
    if not JOB_ID.match(job_id):
        raise JobNotFound(job_id[:128])
    return job_id


@guarded
def job_page(request: Request) -> Response:
    ctx = _ctx(request)
    job_id = _job_id(request)
    cursor = int_param(request, "cursor", 0, 0, 2**62)
    limit = int_param(request, "limit", FAILED_PAGE_DEFAULT, 1, FAILED_PAGE_MAX)
    detail = job_detail(ctx, job_id)
    failed, next_cursor = ctx.jobs.failed_items(job_id, cursor=cursor, limit=limit)
    return _html("job.html", poll=f"/ui/jobs/{job_id}.json", refresh=ctx.settings.ui_refresh_seconds,
                 job=detail["jobs"][0], failed=[display.failed_item_row(r) for r in failed], cursor=cursor,
                 next_cursor=next_cursor, limit=limit, **detail)


@guarded
def job_json(request: Request) -> Response:
    return JSONResponse(job_detail(_ctx(request), _job_id(request)))


def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")
