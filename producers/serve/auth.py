"""Who may read the jobs page: HTTP basic auth from TIDYQ_UI_AUTH=user:password.

The page shows job ids, error messages and the deployment's shape, so it is never open: without
credentials configured the server refuses to start (`tidyq serve` exits 2 saying what to set).
Only SHA-256 digests of the expected user and password are kept, compared in constant time
(both compared every time, so a wrong user costs as long as a wrong password).

Paths under ``open_prefixes`` skip this check: ``/healthz`` (no data) and the REST API under
``/api/v1``, which does its own bearer-token auth (producers/api/).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import Settings
from shared.errors import ConfigurationError

MIN_PASSWORD_LENGTH = 8
REALM = "tidyq"
WHAT_TO_SET = ("set TIDYQ_UI_AUTH=user:password (HTTP basic auth of the jobs page; "
               f"a password of at least {MIN_PASSWORD_LENGTH} characters)")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class BasicCredentials:
    """The one user and password the page accepts (kept as digests only)."""

    def __init__(self, user: str, password: str):
        self._user, self._password = _digest(user), _digest(password)

    @classmethod
    def from_settings(cls, settings: Settings) -> BasicCredentials:
        """ConfigurationError (naming TIDYQ_UI_AUTH) when unset or malformed."""
        if settings.ui_auth is None or not settings.ui_auth.get_secret_value().strip():
            raise ConfigurationError(f"the jobs page needs authentication: {WHAT_TO_SET}")
        user, sep, password = settings.ui_auth.get_secret_value().partition(":")
        if not sep or not user.strip():
            raise ConfigurationError(f"TIDYQ_UI_AUTH is not user:password: {WHAT_TO_SET}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ConfigurationError(f"TIDYQ_UI_AUTH's password is shorter than {MIN_PASSWORD_LENGTH} characters")
        return cls(user, password)

    def check(self, authorization: str | None) -> bool:
        """True when an ``Authorization: Basic ...`` header carries the expected user and password."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user_ok = hmac.compare_digest(_digest(user), self._user)
        password_ok = hmac.compare_digest(_digest(password), self._password)
        return bool(sep) and user_ok and password_ok


class BasicAuthMiddleware:
    """ASGI middleware: 401 with a Basic challenge unless the request carries the credentials."""

    def __init__(self, app: ASGIApp, credentials: BasicCredentials, open_prefixes: tuple[str, ...] = ()):
        self.app, self.credentials, self.open_prefixes = app, credentials, open_prefixes

    def _is_open(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
        if self.credentials.check(header):
            await self.app(scope, receive, send)
            return
        body = b"authentication required\n"
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()),
            (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})
