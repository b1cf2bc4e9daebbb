"""The config as plain data for display, with secrets and URL passwords masked."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "***"


# Query parameters that carry credentials in DSNs (``?password=...``) and URLs.
_SECRET_PARAM = re.compile(r"password|secret|token", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or credential query parameter) masked, for logs."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{hostport}"
    params = []
    for param in parts.query.split("&") if parts.query else []:
        key, eq, _ = param.partition("=")
        params.append(f"{key}={REDACTED}" if eq and _SECRET_PARAM.search(unquote(key)) else param)
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(params)))


def redact(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") and isinstance(value, str):
                value = REDACTED if value else ""
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)  # any URL may carry a password, not only DSNs
            out[f.name] = redact(value)
        return out
    if isinstance(obj, tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    return obj
