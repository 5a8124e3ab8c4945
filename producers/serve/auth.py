"""Who may read the jobs page: HTTP basic auth (TIDYQ_UI_AUTH=user:password), or the user an OAuth
proxy in front has signed in (TIDYQ_UI_AUTH_PROXY_HEADER, e.g. oauth2-proxy's X-Auth-Request-Email).

The page shows job ids, error messages and the deployment's shape, so it is never open: with
neither configured the server refuses to start (`tidyq serve` exits 2 saying what to set).
Basic auth keeps only SHA-256 digests of the expected user and password, compared in constant
time (both compared every time, so a wrong user costs as long as a wrong password). The proxy's
header is believed only on connections from TIDYQ_UI_AUTH_PROXY_FROM (the proxy's addresses):
anyone else could send it too.

Paths under ``open_prefixes`` skip this check: ``/healthz`` (no data) and the REST API under
``/api/v1``, which does its own bearer-token auth (producers/api/).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.config import Settings
from shared.errors import ConfigurationError

MIN_PASSWORD_LENGTH = 8
REALM = "tidyq"
WHAT_TO_SET = ("set TIDYQ_UI_AUTH=user:password (HTTP basic auth of the jobs page; "
               f"a password of at least {MIN_PASSWORD_LENGTH} characters), or TIDYQ_UI_AUTH_PROXY_HEADER "
               "behind an OAuth proxy")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class BasicCredentials:
    """The one user and password the page accepts (kept as digests only)."""

    def __init__(self, user: str, password: str):
        self._user, self._password = _digest(user), _digest(password)

    @classmethod
    def from_settings(cls, settings: Settings) -> BasicCredentials | None:
        """None when TIDYQ_UI_AUTH is unset; ConfigurationError (naming it) when malformed."""
        if settings.ui_auth is None or not settings.ui_auth.get_secret_value().strip():
            return None
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


class ProxyUser:
    """The signed-in user named by an authenticating proxy's header, from the proxy's addresses only."""

    def __init__(self, header: str, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self.header, self.trusted = header.lower().encode("latin-1"), trusted

    @classmethod
    def from_settings(cls, settings: Settings) -> ProxyUser | None:
        header = (settings.ui_auth_proxy_header or "").strip()
        if not header:
            return None
        trusted = []
        for part in (p.strip() for p in settings.ui_auth_proxy_from.split(",")):
            if not part:
                continue
            try:
                trusted.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigurationError(f"TIDYQ_UI_AUTH_PROXY_FROM: {part!r} is not an address or network") from None
        if not trusted:
            raise ConfigurationError("TIDYQ_UI_AUTH_PROXY_FROM names no address: the proxy's header would be "
                                     "trusted from nowhere")
        return cls(header, trusted)

    def check(self, scope: Scope) -> bool:
        client = scope.get("client") or ("", 0)
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        if not any(peer in net for net in self.trusted):
            return False
        return any(k == self.header and v.strip() for k, v in scope.get("headers", []))


class PageAuth:
    """The page's accepted ways in: basic credentials, a trusted proxy's user, or both."""

    def __init__(self, basic: BasicCredentials | None, proxy: ProxyUser | None):
        self.basic, self.proxy = basic, proxy

    @classmethod
    def from_settings(cls, settings: Settings) -> PageAuth:
        """ConfigurationError saying what to set when the page would be open."""
        auth = cls(BasicCredentials.from_settings(settings), ProxyUser.from_settings(settings))
        if auth.basic is None and auth.proxy is None:
            raise ConfigurationError(f"the jobs page needs authentication: {WHAT_TO_SET}")
        return auth

    def allows(self, scope: Scope) -> bool:
        if self.proxy is not None and self.proxy.check(scope):
            return True
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
        return self.basic is not None and self.basic.check(header)


class PageAuthMiddleware:
    """ASGI middleware: 401 with a Basic challenge unless PageAuth allows the request."""

    def __init__(self, app: ASGIApp, auth: PageAuth, open_prefixes: tuple[str, ...] = ()):
        self.app, self.auth, self.open_prefixes = app, auth, open_prefixes

    def _is_open(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if self.auth.allows(scope):
            await self.app(scope, receive, send)
            return
        body = b"authentication required\n"
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-store")]
        if self.auth.basic is not None:  # behind a proxy only, a browser prompt would not help
            headers.append((b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode()))
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
