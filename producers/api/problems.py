"""RFC 9457 problem details: every error the API answers, as ``application/problem+json``.

``field`` names what was wrong in the request (a body field such as ``rows[3]: field 'inputs.q'``,
a query parameter, or ``body:7`` for line 7 of a JSONL upload), taken from BadInput's ``where``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

PROBLEM_TYPE = "https://tidyq.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raised by handlers; becomes the response."""

    def __init__(self, status: int, kind: str, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        self.status, self.kind, self.detail, self.field = status, kind, detail, field
        self.headers, self.extra = headers or {}, extra
        super().__init__(detail)

    def response(self, instance: str | None = None) -> JSONResponse:
        body: dict[str, Any] = {"type": PROBLEM_TYPE + self.kind, "title": HTTPStatus(self.status).phrase,
                                "status": self.status, "detail": self.detail}
        if self.field:
            body["field"] = self.field
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return JSONResponse(body, status_code=self.status, media_type=MEDIA_TYPE, headers=self.headers)


def bad_input(exc: Exception, *, status: int = 422, kind: str = "bad-input") -> Problem:
    """A BadInput as a problem: ``detail`` is the message without its ``where:`` prefix, ``field`` the where."""
    where = getattr(exc, "where", None)
    text = str(exc)
    if where and text.startswith(f"{where}: "):
        text = text[len(where) + 2:]
    return Problem(status, kind, text, field=where)


SCHEMA = {
    "type": "object", "required": ["type", "title", "status", "detail"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                   "detail": {"type": "string"}, "field": {"type": "string"}, "instance": {"type": "string"}},
}
