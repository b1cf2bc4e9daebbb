"""What Redis answers, read into the project's types: text from bytes, field/value pairs, the
load script's reply about a session and about its user's profile, the commit script's."""

from __future__ import annotations

from typing import Any, Literal

import orjson

from ..frozen import frozen
from ..session.model import SessionSnapshot


def as_str(value: bytes | str) -> str:
    """A Redis reply as text (replies are bytes; a client made with ``decode_responses`` gives str)."""
    return value.decode() if isinstance(value, bytes) else value


def pairs(flat: list[Any]) -> dict[str, bytes]:
    return {as_str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


@frozen
class Committed:
    """What the commit script did with a turn."""

    recorded: bool  # False: an earlier request with the same Idempotency-Key recorded it
    version: str
    first_seq: int


@frozen
class ProfileLoaded:
    """A user's profile as the load script saw it; ``facts`` only when ``fresh``."""

    state: Literal["absent", "current", "fresh"]
    version: str = ""
    facts: dict[str, str] | None = None


@frozen
class Lookup:
    """What one load round trip found: nothing, the caller's version still current, or a copy
    (and, when asked, what it found of the user's profile)."""

    state: Literal["absent", "current", "fresh"]
    snapshot: SessionSnapshot | None = None
    version: str = ""
    profile: ProfileLoaded | None = None


def profile_reply(reply: list[Any]) -> ProfileLoaded | None:
    if not reply:
        return None
    kind = int(reply[0])
    if kind == 0:
        return ProfileLoaded("absent")
    if kind == 1:
        return ProfileLoaded("current", as_str(reply[1]))
    flat = pairs(reply[2])
    facts = {k[2:]: orjson.loads(v) for k, v in flat.items() if k.startswith("f:")}
    return ProfileLoaded("fresh", as_str(reply[1]), facts)


def committed_reply(reply: list[Any]) -> Committed:
    """The commit script's reply (other than "absent"): recorded now, recorded before under the
    same idempotency key, or dropped (the session was deleted since the turn was asked)."""
    kind = int(reply[0])
    if kind == -2:
        return Committed(False, "", 0)
    if kind == 0:
        version, _, seq = as_str(reply[1]).rpartition("|")
        return Committed(False, version, int(seq))
    return Committed(True, as_str(reply[1]), int(reply[2]))
