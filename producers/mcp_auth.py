"""Who may call `tidyq mcp --http`: bearer tokens checked by the MCP SDK's auth middleware.

Two verifiers behind the SDK's ``TokenVerifier`` protocol (``verify_token(token) -> AccessToken |
None``); the SDK answers 401 for a missing or refused token before any tool runs:

- ``StaticTokenVerifier``: a fixed list of long random tokens (TIDYQ_MCP_TOKENS, comma-separated).
  Only their SHA-256 digests are kept, compared in constant time.
- ``IntrospectionTokenVerifier``: this server as an OAuth 2.0 resource server; tokens are checked
  at the authorization server's RFC 7662 introspection endpoint (TIDYQ_MCP_OAUTH_*), and with
  TIDYQ_MCP_RESOURCE_URL set the SDK also refuses tokens issued for another resource (RFC 8707).

Tokens are never logged, echoed in errors, or stored in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings

from shared.config import Settings
from shared.errors import ConfigurationError

MIN_TOKEN_LENGTH = 16
log = logging.getLogger("tidyq.mcp.auth")


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenDigests:
    """A fixed set of bearer tokens kept only as SHA-256 digests; ``match`` compares in constant time.
    Shared by the MCP server (TIDYQ_MCP_TOKENS) and the REST API (TIDYQ_API_TOKENS, producers/api/auth.py)."""

    def __init__(self, tokens: list[str], setting: str = "TIDYQ_MCP_TOKENS"):
        if not tokens:
            raise ConfigurationError(f"no bearer tokens given ({setting})")
        for n, token in enumerate(tokens, start=1):
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigurationError(f"{setting}: token #{n} is shorter than {MIN_TOKEN_LENGTH} characters; "
                                         "use a long random one, e.g. "
                                         "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        self._digests = [_digest(t) for t in tokens]

    def match(self, token: str) -> int:
        """The 1-based position of ``token`` among the tokens, 0 when it is none of them."""
        given = _digest(token)
        match = 0
        for n, digest in enumerate(self._digests, start=1):
            if hmac.compare_digest(given, digest):  # no early exit: time does not depend on which one
                match = match or n
        return match


class StaticTokenVerifier:
    """Accepts any of a fixed set of tokens. ``client_id`` names the token by its position
    (static-1, static-2, ...) so logs can tell callers apart without revealing the token."""

    def __init__(self, tokens: list[str], scopes: list[str] | None = None):
        self._tokens = TokenDigests(tokens)
        self._scopes = list(scopes or [])

    async def verify_token(self, token: str) -> AccessToken | None:
        match = self._tokens.match(token)
        if not match:
            return None
        return AccessToken(token=token, client_id=f"static-{match}", scopes=list(self._scopes))


class IntrospectionTokenVerifier:
    """RFC 7662: POST the token to the authorization server; it answers ``{"active": true, ...}``.

    ``aud`` (the resource the token was issued for) goes to ``AccessToken.resource`` so the SDK
    can refuse tokens minted for another server when ``resource_url`` is configured.
    """

    def __init__(self, introspection_url: str, *, client_id: str | None = None, client_secret: str | None = None,
                 resource_url: str | None = None, timeout: float = 10.0):
        self.introspection_url = introspection_url
        self._auth = (client_id, client_secret or "") if client_id else None
        self.resource_url = resource_url
        self.timeout = timeout

    async def verify_token(self, token: str) -> AccessToken | None:
        import httpx2

        try:
            async with httpx2.AsyncClient(timeout=self.timeout) as http:
                kwargs: dict[str, Any] = {"data": {"token": token, "token_type_hint": "access_token"},
                                          "headers": {"Accept": "application/json"}}
                if self._auth:
                    kwargs["auth"] = self._auth
                response = await http.post(self.introspection_url, **kwargs)
        except Exception as exc:  # the authorization server is down: refuse (401), say why in the log
            log.warning("token introspection failed: %s", type(exc).__name__)
            return None
        if response.status_code != 200:
            log.warning("token introspection answered HTTP %s", response.status_code)
            return None
        try:
            body = response.json()
        except ValueError:
            log.warning("token introspection answered non-JSON")
            return None
        if not isinstance(body, dict) or body.get("active") is not True:
            return None
        exp = body.get("exp")
        if isinstance(exp, (int, float)) and exp < time.time():
            return None
        return AccessToken(token=token, client_id=str(body.get("client_id") or body.get("sub") or "oauth"),
                           scopes=body["scope"].split() if isinstance(body.get("scope"), str) else [],
                           expires_at=int(exp) if isinstance(exp, (int, float)) else None,
                           resource=self._resource(body.get("aud")), subject=body.get("sub"),
                           claims={"iss": body["iss"]} if body.get("iss") else None)

    def _resource(self, aud: Any) -> str | None:
        if isinstance(aud, list):
            if self.resource_url and any(_same_url(a, self.resource_url) for a in aud if isinstance(a, str)):
                return self.resource_url
            return aud[0] if aud and isinstance(aud[0], str) else None
        return aud if isinstance(aud, str) else None


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def http_auth(settings: Settings, *, host: str, port: int) -> tuple[AuthSettings, TokenVerifier]:
    """The SDK's auth settings and token verifier for the HTTP transport, from TIDYQ_MCP_*.

    Static tokens win when both are set. Raises ConfigurationError when neither is configured:
    the HTTP transport never runs without a token check.
    """
    scopes = _split(settings.mcp_required_scopes)
    tokens = _split(settings.mcp_tokens.get_secret_value()) if settings.mcp_tokens else []
    if tokens:
        # The SDK enables its bearer middleware only with AuthSettings, whose issuer_url is required;
        # with static tokens there is no authorization server, so this server names itself. It is
        # published nowhere (no resource_server_url -> no metadata routes).
        auth = AuthSettings(issuer_url=f"http://{_url_host(host)}:{port}", resource_server_url=None,
                            required_scopes=scopes or None)
        return auth, StaticTokenVerifier(tokens, scopes)
    if settings.mcp_oauth_introspection_url:
        if not settings.mcp_oauth_issuer_url:
            raise ConfigurationError("TIDYQ_MCP_OAUTH_INTROSPECTION_URL is set but TIDYQ_MCP_OAUTH_ISSUER_URL is not "
                                     "(the authorization server clients get tokens from)")
        resource = settings.mcp_resource_url
        auth = AuthSettings(issuer_url=settings.mcp_oauth_issuer_url, resource_server_url=resource,
                            validate_token_resource=True if resource else None, required_scopes=scopes or None)
        secret = settings.mcp_oauth_client_secret.get_secret_value() if settings.mcp_oauth_client_secret else None
        return auth, IntrospectionTokenVerifier(settings.mcp_oauth_introspection_url,
                                                client_id=settings.mcp_oauth_client_id, client_secret=secret,
                                                resource_url=resource)
    raise ConfigurationError("the HTTP transport needs a bearer token check: set TIDYQ_MCP_TOKENS (comma-separated "
                             "long random tokens) or TIDYQ_MCP_OAUTH_ISSUER_URL + TIDYQ_MCP_OAUTH_INTROSPECTION_URL; "
                             "or use stdio (no --http)")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
