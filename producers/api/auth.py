"""Who may call the REST API: bearer tokens from TIDYQ_API_TOKENS, each ``TOKEN`` or ``TENANT=TOKEN``
(comma-separated; the first '=' separates the tenant, so a token with '=' in it needs a tenant).

Tokens are kept only as SHA-256 digests and compared in constant time (producers/mcp_auth.TokenDigests,
the MCP server's check). A tenant named on a token is stamped on every job that token submits, and
that token sees only its tenant's jobs (others answer 404, as if they did not exist); a token without a
tenant sees every job (an operator's).
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.mcp_auth import TokenDigests
from shared.config import Settings
from shared.errors import ConfigurationError

SETTING = "TIDYQ_API_TOKENS"


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: which token (by position, never its value) and its tenant."""

    token_number: int
    tenant: str | None

    def may_see(self, job_tenant: str | None) -> bool:
        return self.tenant is None or self.tenant == job_tenant


class ApiTokens:
    def __init__(self, entries: list[tuple[str | None, str]]):
        self._tokens = TokenDigests([token for _, token in entries], SETTING)
        self._tenants = [tenant for tenant, _ in entries]

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiTokens:
        raw = settings.api_tokens.get_secret_value() if settings.api_tokens else ""
        entries: list[tuple[str | None, str]] = []
        for n, part in enumerate((p.strip() for p in raw.split(",")), start=1):
            if not part:
                continue
            tenant, sep, token = part.partition("=")
            if not sep:
                entries.append((None, part))
                continue
            if not tenant.strip():
                raise ConfigurationError(f"{SETTING}: entry #{n} has an empty tenant before '='")
            entries.append((tenant.strip(), token.strip()))
        return cls(entries)

    def caller(self, authorization: str | None) -> Caller | None:
        """The caller of an ``Authorization: Bearer <token>`` header, or None (401)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        match = self._tokens.match(token.strip())
        return Caller(match, self._tenants[match - 1]) if match else None
