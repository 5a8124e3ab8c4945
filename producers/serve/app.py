"""`tidyq serve`'s one ASGI app: the jobs page for people, and the REST API for services.

Layout of the URL space:
- ``/``, ``/jobs/{id}``, ``/ui/*.json``, ``/static/*``: the page (producers/serve/pages.py), behind
  HTTP basic auth or an OAuth proxy's user (producers/serve/auth.py); without either the app is
  not built.
- ``/api/v1``: the REST API (producers/api/app.py ``build_api_app``) is mounted here when
  TIDYQ_API_TOKENS is set; it does its own bearer-token auth, so the page's auth skips the prefix.
- ``/healthz``: open, no data (for compose and load-balancer health checks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.api.app import build_api_app
from producers.serve import pages
from producers.serve.auth import PageAuth, PageAuthMiddleware
from shared.config import Settings, get_settings

API_PREFIX = "/api/v1"
OPEN_PREFIXES = (API_PREFIX, "/healthz")
# The page's own script and styles only; no inline script or style, no framing, no referrer leak.
PAGE_HEADERS = [(b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                 b"img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
                (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]


class PageHeaders:
    """Adds PAGE_HEADERS to every response outside the REST API (which sets its own)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *PAGE_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def api_app(settings: Settings) -> tuple[Starlette | None, str | None]:
    """The REST API to mount at /api/v1, or None and why it is off. It is off when no API token is
    configured (the page still runs); a token setting it refuses is an error, as the API decides."""
    if not settings.api_tokens:
        return None, "set TIDYQ_API_TOKENS to serve the REST API under /api/v1"
    return build_api_app(settings), None


def lifespan_of(apps: list[Starlette]):
    """Starlette runs the lifespan of the top app only: enter each mounted app's lifespan too
    (the API closes its Redis pool on the way out)."""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for sub in apps:
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield

    return lifespan


def build_app(settings: Settings | None = None) -> Starlette:
    """The whole server. ConfigurationError when no authentication for the page is configured."""
    s = settings or get_settings()
    page_auth = PageAuth.from_settings(s)
    routes: list[BaseRoute] = [
        Route("/", pages.index),
        Route("/jobs/{job_id}", pages.job_page),
        Route("/ui/state.json", pages.state_json),
        Route("/ui/jobs/{job_id}.json", pages.job_json),
        Route("/healthz", pages.healthz),
        Mount("/static", app=StaticFiles(directory=pages.HERE / "static"), name="static"),
    ]
    api, api_off = api_app(s)
    if api is not None:
        routes.append(Mount(API_PREFIX, app=api))
    app = Starlette(routes=routes, lifespan=lifespan_of([api] if api is not None else []))
    app.state.tidyq = pages.Context.from_settings(s)
    app.state.api_off = api_off  # None when the REST API is mounted
    app.add_middleware(PageAuthMiddleware, auth=page_auth, open_prefixes=OPEN_PREFIXES)
    app.add_middleware(PageHeaders)
    return app
