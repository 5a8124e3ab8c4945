"""The REST API under /api/v1 (``build_api_app``): jobs, results, cancel, retry, programs, OpenAPI."""

from producers.api.app import build_api_app

__all__ = ["build_api_app"]
