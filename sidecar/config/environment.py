"""The environment's part in the config: ``${VAR}`` interpolation in the file, and
``SIDECAR_<SECTION>_<KEY>`` overrides of single keys."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..errors import ConfigError
from .validate import EnvText, join

CONFIG_ENV = "SIDECAR_CONFIG"
ENV_PREFIX = "SIDECAR_"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env and (env[name] != "" or default is None):
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"config error: {path or '<root>'}: environment variable {name} is not set"
            )

        out = _VAR.sub(sub, value)
        # A value that was entirely a variable is typed when it is built (ports, bools, strings).
        if out != value and _VAR.fullmatch(value):
            return EnvText(out)
        return out
    if isinstance(value, Mapping):
        return {k: interpolate(v, env, join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass a field holds (also through ``X | None``), or None for other types."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        found = [a for a in get_args(tp) if dataclasses.is_dataclass(a) and isinstance(a, type)]
        return found[0] if len(found) == 1 else None
    return None


def _env_keys(tp: type) -> dict[str, tuple[str, ...]]:
    """Variable suffix (``HISTORY_LIMIT``, ``HTTP_EXTRACTOR_URL``) -> key path, nested included."""
    out: dict[str, tuple[str, ...]] = {}
    hints = get_type_hints(tp)
    for f in dataclasses.fields(tp):
        out.setdefault(f.name.upper(), (f.name,))
        nested = _dataclass_of(hints[f.name])
        if nested is not None:
            for suffix, sub in _env_keys(nested).items():
                out.setdefault(f"{f.name.upper()}_{suffix}", (f.name, *sub))
    return out


# What Kubernetes injects for a Service named ``sidecar-<section>`` (enableServiceLinks): such a
# variable is no misspelt key, and must not stop the pod from starting.
_IP = r"[0-9a-fA-F.:]+"
_PROTO = r"(tcp|udp|sctp)"
_SERVICE_LINKS = tuple(
    (re.compile(name), re.compile(value))
    for name, value in (
        (r"SERVICE_HOST", _IP),
        (r"SERVICE_PORT(_\w+)?", r"\d+"),
        (r"PORT(_\d+_(TCP|UDP|SCTP))?", _PROTO + r"://\S+"),
        (r"PORT_\d+_(TCP|UDP|SCTP)_PROTO", _PROTO),
        (r"PORT_\d+_(TCP|UDP|SCTP)_PORT", r"\d+"),
        (r"PORT_\d+_(TCP|UDP|SCTP)_ADDR", _IP),
    )
)


def _service_link(suffix: str, value: str) -> bool:
    return any(n.fullmatch(suffix) and v.fullmatch(value) for n, v in _SERVICE_LINKS)


def apply_env_overrides(
    root: type, data: dict[str, Any], env: Mapping[str, str], exempt: frozenset[str] = frozenset()
) -> None:
    """``SIDECAR_<SECTION>_<KEY>`` sets ``section.key`` (``SIDECAR_CONTEXT_HTTP_EXTRACTOR_URL``:
    ``context.http_extractor.url``). A variable of an existing section that names none of its keys
    is an error, like an unknown key in the file; variables of other names are left alone.
    ``root``: the dataclass whose fields are the sections."""
    hints = get_type_hints(root)
    sections: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {}
    for section in dataclasses.fields(root):
        tp = _dataclass_of(hints[section.name])
        if tp is not None:
            sections[section.name.upper()] = (section.name, _env_keys(tp))
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV or var in exempt:
            continue
        rest = var[len(ENV_PREFIX) :]
        matching = [s for s in sections if rest.startswith(s + "_")]
        if not matching:
            continue  # not a section: another program's variable, or a Service link
        name, keys = sections[max(matching, key=len)]
        suffix = rest[len(name) + 1 :]
        path = keys.get(suffix)
        if path is None:
            if _service_link(suffix, env[var]):
                continue
            (closest,) = difflib.get_close_matches(suffix, list(keys), n=1, cutoff=0.0)
            key = ".".join((name, *keys[closest]))
            raise ConfigError(
                f"config error: {var}: {name} has no such key; closest: "
                f"{ENV_PREFIX}{name.upper()}_{closest} ({key})"
            )
        target: Any = data.setdefault(name, {})
        for step in path[:-1]:
            if not isinstance(target, dict):
                break
            if target.get(step) is None:
                target[step] = {}  # ``listen: null`` in the file, a key of it from the environment
            target = target[step]
        if isinstance(target, dict):  # otherwise reported as a type error when it is built
            target[path[-1]] = EnvText(env[var])


def referenced(value: Any) -> set[str]:
    """The environment variables the file names as ``${VAR}``."""
    if isinstance(value, str):
        return {m.group(1) for m in _VAR.finditer(value)}
    if isinstance(value, Mapping):
        return set().union(*(referenced(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(referenced(v) for v in value))
    return set()
