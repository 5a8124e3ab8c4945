"""The API on its own (tests, the bench, a deployment without the jobs page): build_api_app() mounted
at /api/v1, as `tidyq serve` mounts it. ``uvicorn --factory producers.api.standalone:create_app``."""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount

from producers.api.app import build_api_app
from shared.config import Settings

MOUNT = "/api/v1"


def create_app(settings: Settings | None = None) -> Starlette:
    api = build_api_app(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette):  # a mounted app's own lifespan does not run: close its pool here
        yield
        await api.state.api.client.close()

    return Starlette(routes=[Mount(MOUNT, app=api)], lifespan=lifespan)
