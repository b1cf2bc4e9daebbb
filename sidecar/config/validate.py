"""Building the typed config from plain data: each value checked against its field's type and
check, every complaint one ``config error: <key.path>: ...`` line."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ..errors import ConfigError


class EnvText(str):
    """Text that came from the environment: typed by the key it lands on, not by how it looks
    (a token ``12345`` or ``true`` stays a string; a port ``8080`` becomes a number)."""

    __slots__ = ()


def scalar_from_text(text: str) -> Any:
    if text == "":
        return ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return parsed if isinstance(parsed, (bool, int, float)) or parsed is None else text


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"config error: {path}: {message}")


def build(tp: Any, value: Any, path: str) -> Any:
    if isinstance(value, EnvText):
        value = str(value) if tp is str else scalar_from_text(str(value))
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise fail(path or "<root>", f"expected a mapping, got {kind(value)}")
        hints = get_type_hints(tp)
        known = {f.name: f for f in dataclasses.fields(tp)}
        for key in value:
            if key not in known:
                raise fail(join(path, str(key)), "unknown key")
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            key_path = join(path, name)
            if name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise fail(key_path, "required key is missing")
                continue
            built = build(hints[name], value[name], key_path)
            check = f.metadata.get("check")
            if check is not None and built is not None:
                complaint = check(built)
                if complaint:
                    raise fail(key_path, complaint)
            kwargs[name] = built
        return tp(**kwargs)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = " | ".join(str(a) for a in allowed)
            raise fail(path, f"expected one of {choices}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return build(args[0], value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise fail(path, f"expected a list, got {kind(value)}")
        item = get_args(tp)[0]
        return tuple(build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail(path, f"expected a mapping, got {kind(value)}")
        _, vt = get_args(tp)
        return {str(k): build(vt, v, join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail(path, f"expected a string, got {kind(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a programming error
