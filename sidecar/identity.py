"""Who a request belongs to: the tenant (and, where known, the user) that scopes every session.

Three modes (``identity.mode``):

- ``credential``: the tenant is an HMAC-SHA256 of the credential the client presents
  (``Authorization`` or ``X-API-Key``), keyed with ``identity.secret``; ``anonymous`` without one.
- ``jwt``: a bearer token is verified; the tenant is its ``tenant_claim`` (else ``iss``), the user
  its ``user_claim``, so a session outlives the token it started with.
- ``headers``: ``X-Tenant-ID`` / ``X-User-ID`` from a trusted gateway, validated.

Outside their mode the identity headers are ignored (and the proxy strips them).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from .config import IdentityConfig
from .errors import BadRequest
from .frozen import frozen
from .jwtkeys import JwtKeys

ANONYMOUS = "anonymous"
TENANT_HEADER = "X-Tenant-ID"
USER_HEADER = "X-User-ID"
IDENTITY_HEADERS = (TENANT_HEADER, USER_HEADER)

# The key of the credential hash when ``identity.secret`` is empty. Fixed and published, so that
# every replica (and every restart) names a credential's tenant alike; check-config warns that
# anyone who knows this key can confirm a guessed API key against a database dump.
DEFAULT_CREDENTIAL_KEY = b"session-sidecar/credential-tenant/v1"

HEADER_VALUE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A tenant or user taken from a verified token: its issuer chose it, but it still lands in keys,
# rows and log lines, so it is bounded and free of control characters.
MAX_CLAIM_CHARS = 256


@frozen
class Identity:
    """The owner of a request's session.

    ``tenant`` is the bare tenant (``user_profiles`` and the admin API's path use it); ``user`` is
    the identity's user when one is known; ``scope`` is what sessions, messages and usage rows are
    stored under (``<tenant>/<user>`` when there is a user). ``invalid`` marks a presented token
    that failed verification: such a request gets no memory.
    """

    tenant: str
    user: str | None = None
    invalid: bool = False

    @property
    def scope(self) -> str:
        tenant = _scope_part(self.tenant)
        return f"{tenant}/{_scope_part(self.user)}" if self.user else tenant


def _scope_part(value: str) -> str:
    """``/`` and ``%`` percent-encoded, so ``<tenant>/<user>`` reads back one way only: a token's
    tenant ``a/b`` (an issuer URL) and tenant ``a`` with user ``b`` never share a scope. Tenants
    of the credential and headers modes never hold either character and are unchanged."""
    if "/" in value or "%" in value:
        return value.replace("%", "%25").replace("/", "%2F")
    return value


def credential_tenant(credential: str, secret: str) -> str:
    """The tenant of a credential: ``key-`` + 128 bits of HMAC-SHA256 keyed with ``secret``.

    Header values may carry any bytes (aiohttp keeps undecodable ones as surrogate escapes), and
    the hash covers exactly the bytes the client sent.
    """
    key = secret.encode() if secret else DEFAULT_CREDENTIAL_KEY
    raw = credential.strip().encode("utf-8", "surrogateescape")
    return "key-" + hmac.new(key, raw, hashlib.sha256).hexdigest()[:32]


# Tenant schemes of earlier versions, by the name ``sidecar migrate --rekey-from`` takes.
OLD_SCHEMES = ("plain-sha256",)


def plain_sha256_tenant(credential: str) -> str:
    """The tenant earlier versions gave a credential: a plain, unkeyed SHA-256 of it."""
    return "key-" + hashlib.sha256(credential.strip().encode()).hexdigest()[:32]


def _credential_identity(headers: Mapping[str, str], config: IdentityConfig) -> Identity:
    credential = headers.get("Authorization") or headers.get("X-API-Key")
    if credential and credential.strip():
        return Identity(credential_tenant(credential, config.secret))
    return Identity(ANONYMOUS)


def _header_value(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None or value == "":
        return None
    if not HEADER_VALUE.fullmatch(value):
        raise BadRequest(
            f"{name} must be 1-128 characters of A-Z a-z 0-9 . _ : -",
            code="invalid_identity_header",
        )
    return value


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def is_identity_text(value: str) -> bool:
    """Whether ``value`` may name a tenant or user: 1-256 characters, none of them a control
    character or a lone surrogate (which PostgreSQL, Redis keys and log lines would suffer)."""
    if not 0 < len(value) <= MAX_CLAIM_CHARS:
        return False
    if value.isascii():
        return value.isprintable()
    return not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    """A claim usable as a tenant or user: a string (or integer) that ``is_identity_text``."""
    value = claims.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not is_identity_text(value):
        return None
    return value


def _jwt_identity(token: str, config: IdentityConfig, keys: JwtKeys) -> Identity:
    claims = keys.verify(token)
    if claims is None:
        return Identity(ANONYMOUS, invalid=True)
    jwt_cfg = config.jwt
    tenant = _claim(claims, jwt_cfg.tenant_claim) or _claim(claims, "iss")
    if tenant is None:
        # Verified, but nothing to scope it by: memory keyed by the token would be lost at its
        # next refresh, and memory shared by every such token would mix strangers' sessions.
        return Identity(ANONYMOUS, invalid=True)
    return Identity(tenant, _claim(claims, jwt_cfg.user_claim))


def resolve_identity(
    headers: Mapping[str, str], config: IdentityConfig, keys: JwtKeys | None = None
) -> Identity:
    """The identity of a request from its headers, by ``config.effective_mode``.

    Raises ``BadRequest`` for a malformed ``X-Tenant-ID``/``X-User-ID`` in headers mode. In jwt
    mode ``keys`` holds the verification keys (a JWKS URL's are fetched by ``IdentityResolver``).
    """
    mode = config.effective_mode
    if mode == "headers":
        tenant = _header_value(headers, TENANT_HEADER)
        user = _header_value(headers, USER_HEADER)
        if tenant is not None:
            return Identity(tenant, user)
        return Identity(_credential_identity(headers, config).tenant, user)
    if mode == "jwt":
        token = bearer_token(headers)
        if token is not None:
            return _jwt_identity(token, config, keys or JwtKeys(config.jwt))
    return _credential_identity(headers, config)


class IdentityResolver:
    """Resolves identities for the app: holds the JWT keys and fetches a JWKS URL when needed."""

    def __init__(self, config: IdentityConfig) -> None:
        self.config = config
        self.keys = JwtKeys(config.jwt) if config.effective_mode == "jwt" else None

    @property
    def rejects_invalid(self) -> bool:
        """Whether a token that fails verification is a 401 rather than a request without memory."""
        return self.config.jwt.reject_invalid

    @property
    def trusts_headers(self) -> bool:
        """Whether ``X-Tenant-ID``/``X-User-ID`` mean something (and may reach the upstream)."""
        return self.config.effective_mode == "headers"

    async def resolve(self, headers: Mapping[str, str]) -> Identity:
        if self.keys is not None and (token := bearer_token(headers)) is not None:
            await self.keys.refresh_for(token)
        return resolve_identity(headers, self.config, self.keys)

    async def close(self) -> None:
        if self.keys is not None:
            await self.keys.close()
