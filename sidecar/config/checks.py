"""The checks a config field's value must pass beyond its type (URLs, ranges, time zones), and
the marks the builder and the redaction read from a field."""

from __future__ import annotations

import dataclasses
import zoneinfo
from collections.abc import Callable
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

Check = Callable[[Any], str | None]  # returns a complaint, or None when the value is fine


def url_check(schemes: tuple[str, ...], what: str) -> Check:
    def check(value: Any) -> str | None:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            return f"expected {what}, got {value!r}"
        if parts.scheme in ("http", "https") and not parts.hostname:
            return f"expected {what}, got {value!r}"
        return None

    return check


def positive(value: Any) -> str | None:
    return None if value > 0 else f"expected a positive number, got {value!r}"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else f"expected zero or a positive number, got {value!r}"


def partitions_in_range(value: Any) -> str | None:
    # One hash slot per partition at most: a cluster has 16384.
    return None if 1 <= value <= 16384 else f"expected 1 to 16384, got {value!r}"


def port_number(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else f"expected a port number (0-65535), got {value!r}"


def time_zone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"expected an IANA time zone such as 'UTC' or 'Asia/Shanghai', got {value!r}"
    return None


def route_path(value: Any) -> str | None:
    if not value.startswith("/") or value.startswith("/_sidecar"):
        return f"expected an absolute path outside /_sidecar, got {value!r}"
    return None


def checked(fn: Check, default: Any = dataclasses.MISSING) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"check": fn})
    return field(default=default, metadata={"check": fn})


# Masked whole by ``redacted()``; URLs (any field) have only their passwords masked.
SECRET = {"secret": True}
