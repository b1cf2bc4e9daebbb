"""Whose profile a request reads and writes (contract section 10).

The identity's user when it has one (a verified token's user claim, or ``X-User-ID`` from a
trusted gateway); in credential mode only, the user the request body names (``user_id`` on
tasks, ``user`` on openai, ``metadata.user_id`` on anthropic), scoped by the credential's tenant.
Behind a gateway a body field must never pick another user, so headers mode ignores it.
"""

from __future__ import annotations

from typing import Any

from ..config import IdentityConfig
from ..identity import Identity, is_identity_text


def body_user(adapter: str, body: dict[str, Any]) -> str | None:
    """The user a request body names, by the adapter's own field, when it is a sane id."""
    value: Any = None
    if adapter == "tasks":
        value = body.get("user_id")
    elif adapter == "openai":
        value = body.get("user")
    elif adapter == "anthropic":
        metadata = body.get("metadata")
        value = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(value, str) and is_identity_text(value.strip()):
        return value.strip()
    return None


def with_profile_user(
    identity: Identity, config: IdentityConfig, adapter: str, body: dict[str, Any]
) -> Identity:
    """The identity whose user owns the profile: in credential mode the body's user joins the
    credential's tenant (its sessions are then that user's, as section 9 keeps any user's)."""
    if identity.user or identity.invalid or config.effective_mode != "credential":
        return identity
    user = body_user(adapter, body)
    return Identity(identity.tenant, user) if user else identity


def owner_of(identity: Identity) -> tuple[str, str] | None:
    return (identity.tenant, identity.user) if identity.user else None
