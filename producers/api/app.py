"""``build_api_app()``: the REST API as a Starlette app, routes relative to where it is mounted
(`tidyq serve` mounts it at /api/v1; producers/api/standalone.py does the same on its own).

Every error is an RFC 9457 problem (producers/api/problems.py): our typed errors map to 4xx with the
field named, Redis being away to 503, unknown routes and methods to 404/405; a bug is a 500 problem
that says only that (its details go to the server log, never to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

import redis
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from producers.api.problems import Problem, bad_input
from producers.api.routes import Api, validation_problem
from shared.config import Settings, get_settings
from shared.errors import BadInput, ConfigurationError, TidyqError
from shared.store import JobNotFound

log = logging.getLogger("tidyq.api")
Handler = Callable[[Request], Awaitable[Response]]


def problem_for(exc: Exception) -> Problem:
    """Our errors -> the problem the caller reads (no traceback for a user's mistake)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, JobNotFound):
        return bad_input(exc, status=404, kind="not-found")
    if isinstance(exc, BadInput):
        if exc.where == "job":  # the job exists but is in the wrong state (retry while running)
            return bad_input(exc, status=409, kind="conflict")
        return bad_input(exc)
    if isinstance(exc, ValidationError):
        return validation_problem(exc)
    if isinstance(exc, ConfigurationError):
        return Problem(503, "server-configuration", f"the server is not set up for this: {exc}")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        log.warning("api_redis_unavailable: %s: %s", type(exc).__name__, exc)
        return Problem(503, "queue-unavailable", "cannot reach the queue's Redis; try again later",
                       headers={"Retry-After": "5"})
    if isinstance(exc, TidyqError):
        return Problem(422, "rejected", str(exc))
    log.exception("api_internal_error", exc_info=exc)
    return Problem(500, "internal", "internal server error (logged on the server)")


def _endpoint(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return problem_for(exc).response(request.url.path)

    run.__name__ = handler.__name__
    return run


async def _http_problem(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    kind = {404: "not-found", 405: "method-not-allowed"}.get(status, "http")
    detail = {404: f"no such endpoint {request.url.path}; see openapi.json",
              405: f"{request.method} is not allowed on {request.url.path}"}.get(status, str(exc))
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return Problem(status, kind, detail, headers=headers).response(request.url.path)


def build_api_app(settings: Settings | None = None) -> Starlette:
    """The API app. Refuses to build without TIDYQ_API_TOKENS (ConfigurationError): it never serves
    jobs without a token check."""
    api = Api(settings or get_settings())

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await api.client.close()

    routes = [
        Route("/openapi.json", _endpoint(api.schema), methods=["GET"]),
        Route("/jobs", _endpoint(api.submit), methods=["POST"]),
        Route("/jobs/estimate", _endpoint(api.estimate), methods=["POST"]),
        Route("/jobs", _endpoint(api.list_jobs), methods=["GET"]),
        Route("/jobs/{job_id}", _endpoint(api.get_job), methods=["GET"]),
        Route("/jobs/{job_id}/results", _endpoint(api.results), methods=["GET"]),
        Route("/jobs/{job_id}/cancel", _endpoint(api.cancel), methods=["POST"]),
        Route("/jobs/{job_id}/retry", _endpoint(api.retry), methods=["POST"]),
        Route("/programs", _endpoint(api.programs), methods=["GET"]),
        Route("/queues", _endpoint(api.queues), methods=["GET"]),
        Route("/breakers", _endpoint(api.breakers), methods=["GET"]),
        Route("/breakers/{target:path}/reset", _endpoint(api.reset_breaker), methods=["POST"]),
        Route("/budget", _endpoint(api.budget), methods=["GET"]),
        Route("/programs", _endpoint(api.register), methods=["POST"]),
        Route("/programs/{name}/rollout", _endpoint(api.rollout_status), methods=["GET"]),
        *[Route(f"/programs/{{name}}/{action}", _endpoint(api.change_rollout), methods=["POST"])
          for action in ("rollout", "rollback", "promote")],
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_problem})
    app.state.api = api
    return app
