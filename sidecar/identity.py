"""Who a request belongs to: the tenant that scopes every session key and row."""

from __future__ import annotations

import hashlib

from aiohttp import web

ANONYMOUS = "anonymous"


def resolve_tenant(request: web.Request, *, trust_headers: bool) -> str:
    """``X-Tenant-ID`` (and ``X-User-ID``) behind a trusted gateway; otherwise a hash of the
    credential the client presents, never the credential itself; ``anonymous`` without one."""
    if trust_headers:
        tenant = request.headers.get("X-Tenant-ID", "").strip()
        if tenant:
            user = request.headers.get("X-User-ID", "").strip()
            return f"{tenant}/{user}" if user else tenant
    credential = request.headers.get("Authorization") or request.headers.get("X-API-Key")
    if credential:
        return "key-" + hashlib.sha256(credential.strip().encode()).hexdigest()[:32]
    return ANONYMOUS
