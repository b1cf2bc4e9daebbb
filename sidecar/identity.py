"""Who a request belongs to: the tenant (and, where known, the user) that scopes every session."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .config import IdentityConfig, IdentityMode


class HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
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
        return f"{self.tenant}/{self.user}" if self.user else self.tenant


def resolve_identity(headers: Mapping[str, str], config: IdentityConfig) -> Identity:
    """The identity of a request from its headers, by ``config.effective_mode``."""
    if config.effective_mode == "headers":
        tenant = headers.get("X-Tenant-ID", "").strip()
        if tenant:
            user = headers.get("X-User-ID", "").strip() or None
            return Identity(tenant, user)
    credential = headers.get("Authorization") or headers.get("X-API-Key")
    if credential:
        return Identity("key-" + hashlib.sha256(credential.strip().encode()).hexdigest()[:32])
    return Identity(ANONYMOUS)


def resolve_tenant(request: HasHeaders, *, trust_headers: bool) -> str:
    """The storage scope of a request (kept for callers that know only ``trust_headers``)."""
    mode: IdentityMode = "headers" if trust_headers else "credential"
    return resolve_identity(request.headers, IdentityConfig(mode=mode)).scope
