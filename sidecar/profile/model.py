"""What the admin API shows of a user."""

from __future__ import annotations

from ..frozen import frozen


@frozen
class UserRecord:
    tenant: str
    user_id: str
    facts: dict[str, str]
    updated_at: str | None
    sessions: list[str]
