"""Configuration: YAML with ``${VAR}`` interpolation and ``SIDECAR_*`` overrides, as frozen dataclasses.

Everything is validated up front; the first problem found is reported as one line that names the
key path (``config error: redis.url: expected a redis:// or rediss:// URL, got 'localhost'``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml

from .errors import ConfigError

CONFIG_ENV = "SIDECAR_CONFIG"
ENV_PREFIX = "SIDECAR_"

Check = Callable[[Any], str | None]  # returns a complaint, or None when the value is fine


def _url_check(schemes: tuple[str, ...], what: str) -> Check:
    def check(value: Any) -> str | None:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            return f"expected {what}, got {value!r}"
        if parts.scheme in ("http", "https") and not parts.hostname:
            return f"expected {what}, got {value!r}"
        return None

    return check


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"expected a positive number, got {value!r}"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else f"expected zero or a positive number, got {value!r}"


def _partitions(value: Any) -> str | None:
    # One hash slot per partition at most: a cluster has 16384.
    return None if 1 <= value <= 16384 else f"expected 1 to 16384, got {value!r}"


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else f"expected a port number (0-65535), got {value!r}"


def _timezone(value: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"expected an IANA time zone such as 'UTC' or 'Asia/Shanghai', got {value!r}"
    return None


def _route_path(value: Any) -> str | None:
    if not value.startswith("/") or value.startswith("/_sidecar"):
        return f"expected an absolute path outside /_sidecar, got {value!r}"
    return None


def _check(fn: Check, default: Any = dataclasses.MISSING) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"check": fn})
    return field(default=default, metadata={"check": fn})


# Masked whole by ``redacted()``; URLs (any field) have only their passwords masked.
SECRET = {"secret": True}


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = "0.0.0.0"
    port: int = _check(_port, 8080)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = _check(
        _url_check(("http", "https"), "an http:// or https:// URL"), "http://127.0.0.1:8000"
    )
    connect_timeout_s: float = _check(_positive, 5.0)
    read_timeout_s: float = _check(_positive, 300.0)
    pool_size: int = _check(_positive, 100)


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata={
            "check": _url_check(("redis", "rediss", "unix"), "a redis:// or rediss:// URL"),
        },
    )
    key_prefix: str = "sidecar"
    session_ttl_s: int = _check(_positive, 2_592_000)
    # Every Redis call is bounded: a hung Redis must not hang requests.
    socket_timeout_s: float = _check(_positive, 0.5)
    connect_timeout_s: float = _check(_positive, 0.5)
    # Outbox partitions; each session's keys and its partition share one hash tag (cluster-safe),
    # the partitions' slots spread evenly over a cluster's slot space.
    partitions: int = _check(_partitions, 64)
    # true: a Redis Cluster; null: detected from the node's ``INFO cluster``.
    cluster: bool | None = None
    # Circuit breaker: after this many consecutive failures, skip Redis for breaker_reset_s.
    breaker_failures: int = _check(_positive, 3)
    breaker_reset_s: float = _check(_positive, 2.0)


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    dsn: str = field(
        default="postgresql://sidecar@127.0.0.1:5432/sidecar",
        metadata={"check": _url_check(("postgresql", "postgres"), "a postgresql:// DSN")},
    )
    migrate_on_start: bool = True
    pool_max_size: int = _check(_positive, 10)
    connect_timeout_s: float = _check(_positive, 5.0)
    command_timeout_s: float = _check(_positive, 10.0)
    # Messages, usage rows and deletion tombstones older than this are pruned (null: keep forever).
    retention_days: int | None = _check(_positive, None)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    history_limit: int = _check(_non_negative, 50)
    max_stored_messages: int = _check(_positive, 1000)
    history_token_budget: int | None = None
    local_cache_size: int = _check(_non_negative, 10_000)
    # ... and at most this many bytes of message text in it.
    local_cache_max_bytes: int = _check(_non_negative, 64 * 1024 * 1024)
    # Bound on reading a session from PostgreSQL on the request path (restore, degraded load).
    restore_timeout_s: float = _check(_positive, 1.0)
    max_body_bytes: int = _check(_positive, 1_048_576)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    path: str = _check(_route_path)
    adapter: Literal["tasks", "openai", "anthropic", "responses"] = "tasks"
    # tasks adapter: where the window and ``original_query`` go (top level, or inside ``context``).
    history_in: Literal["body", "context"] = "body"
    # tasks adapter: a known backend's conventions (``shannon``: its gateway's flows and fields).
    preset: Literal["shannon"] | None = None
    # Where the assistant's text is read from, first match wins (dotted paths, list indexes as numbers).
    answer_paths: tuple[str, ...] = (
        "result",
        "response",
        "answer",
        "output",
        "message.content",
        "choices.0.message.content",
    )
    # chat adapters: name the session by the body's ``user`` (openai) or ``metadata.user_id``
    # (anthropic) when no X-Session-ID is sent.
    session_from_user: bool = False


@dataclass(frozen=True, slots=True)
class HttpExtractorConfig:
    url: str = ""
    timeout_ms: int = _check(_positive, 50)


@dataclass(frozen=True, slots=True)
class ContextConfig:
    extract_entities: bool = True
    rewrite: Literal["replace", "annotate", "off"] = "replace"
    timezone: str = _check(_timezone, "UTC")
    extractor: Literal["rules", "http"] = "rules"
    http_extractor: HttpExtractorConfig = field(default_factory=HttpExtractorConfig)
    # Extra topics for entity extraction: {name: [keywords...]}
    topics: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JwtConfig:
    secret: str = field(default="", metadata=SECRET)  # HS* key
    public_key_file: str = ""  # PEM public key (RS*, ES*)
    jwks_file: str = ""  # a JWKS document on disk
    jwks_url: str = ""  # a JWKS document fetched over HTTP(S), cached
    jwks_timeout_s: float = _check(_positive, 2.0)
    algorithms: tuple[str, ...] = ("RS256", "ES256", "HS256")
    audience: str = ""
    issuer: str = ""
    tenant_claim: str = "tenant_id"
    user_claim: str = "sub"
    reject_invalid: bool = False


IdentityMode = Literal["credential", "jwt", "headers"]


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    # null: ``credential``, or ``headers`` when the older ``trust_headers: true`` is set.
    mode: IdentityMode | None = None
    trust_headers: bool = False
    # Key of the credential hash (HMAC-SHA256); empty: a fixed documented key (check-config warns).
    secret: str = field(default="", metadata=SECRET)
    jwt: JwtConfig = field(default_factory=JwtConfig)

    @property
    def effective_mode(self) -> IdentityMode:
        if self.mode is not None:
            return self.mode
        return "headers" if self.trust_headers else "credential"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    token: str = field(default="", metadata=SECRET)
    # A second listener for /_sidecar/* (metrics, admin); health endpoints stay on both.
    listen: ListenConfig | None = None


@dataclass(frozen=True, slots=True)
class ReadinessConfig:
    # Stores whose outage makes readyz 503; by default none (the sidecar serves through outages).
    require: tuple[Literal["redis", "postgres"], ...] = ()


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    profile: bool = False  # remember what users say about themselves across sessions
    profile_note: bool = False  # chat adapters: state the profile in a short system note


@dataclass(frozen=True, slots=True)
class TracingConfig:
    enabled: bool = False
    exporter: Literal["otlp", "console", "none"] = "otlp"


@dataclass(frozen=True, slots=True)
class WriterConfig:
    batch_size: int = _check(_positive, 200)
    block_ms: int = _check(_positive, 500)
    # Entries a consumer has held this long without acknowledging are claimed by another.
    claim_idle_ms: int = _check(_positive, 30_000)
    # Attempts for an entry that fails for a data reason before it goes to the dead-letter stream.
    max_data_attempts: int = _check(_positive, 3)
    # Above this many turns waiting for PostgreSQL, readyz lists a problem (0: never). It is
    # reported, never a reason for 503: PostgreSQL stays off the request path.
    ready_max_lag: int = _check(_non_negative, 100_000)
    # Where turns go when neither Redis nor PostgreSQL takes them; replayed later.
    journal_path: str = "sidecar-journal.jsonl"
    journal_max_bytes: int = _check(_positive, 64 * 1024 * 1024)
    # This writer's name in the outbox consumer group ("" = <hostname>-<pid>). Stable per pod, a
    # restart resumes its own pending entries at once; two live processes must not share it.
    consumer: str = ""


@dataclass(frozen=True, slots=True)
class ShutdownConfig:
    # Bound for draining in-flight requests and flushing the writer after SIGTERM. Keep it below
    # the pod's terminationGracePeriodSeconds (default 30 s) minus the preStop delay.
    drain_timeout_s: float = _check(_positive, 20.0)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    access_log: bool = True


def _default_routes() -> tuple[RouteConfig, ...]:
    return (
        RouteConfig(path="/api/tasks", adapter="tasks"),
        RouteConfig(path="/api/v1/tasks", adapter="tasks"),
        RouteConfig(path="/v1/chat/completions", adapter="openai"),
        RouteConfig(path="/v1/messages", adapter="anthropic"),
        RouteConfig(path="/v1/responses", adapter="responses"),
    )


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenConfig = field(default_factory=ListenConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    routes: tuple[RouteConfig, ...] = field(default_factory=_default_routes)
    context: ContextConfig = field(default_factory=ContextConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
        """Build a config from parsed YAML: interpolate ``${VAR}``, apply ``SIDECAR_*``, validate."""
        env = os.environ if env is None else env
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config error: expected a mapping at the top level, got {_kind(data)}"
            )
        resolved = _interpolate(data, env, "")
        _apply_env_overrides(resolved, env, frozenset(_referenced(data)))
        config = _build(cls, resolved, "")
        assert isinstance(config, Config)
        _check_combinations(config)
        return config

    def redacted(self) -> dict[str, Any]:
        """The resolved config as plain data with passwords and tokens masked."""
        out: dict[str, Any] = _redact(self)
        return out


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Config:
    """Read and validate the YAML file at ``path`` (or ``$SIDECAR_CONFIG``)."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_ENV) or None
        if path is None:
            raise ConfigError(
                f"config error: no config file given (use -c FILE or set {CONFIG_ENV})"
            )
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"config error: file not found: {p}") from e
    except OSError as e:
        raise ConfigError(f"config error: cannot read {p}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"config error: {p}: {problem}{where}") from e
    return Config.from_mapping({} if data is None else data, env)


def _check_combinations(config: Config) -> None:
    """Rules that span keys; each failure names the key to change."""
    identity = config.identity
    if identity.trust_headers and identity.mode not in (None, "headers"):
        raise _fail(
            "identity.trust_headers",
            f"true is the older spelling of mode 'headers' and conflicts with mode {identity.mode!r}",
        )
    if identity.effective_mode == "jwt":
        jwt = identity.jwt
        if not (jwt.secret or jwt.public_key_file or jwt.jwks_file or jwt.jwks_url):
            raise _fail(
                "identity.jwt",
                "mode 'jwt' needs a key: set secret, public_key_file, jwks_file or jwks_url",
            )
    admin = config.admin.listen
    if admin is not None and admin.port == config.listen.port and admin.port != 0:
        raise _fail("admin.listen.port", "must differ from listen.port")


# --- interpolation and overrides -------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _EnvText(str):
    """Text that came from the environment: typed by the key it lands on, not by how it looks
    (a token ``12345`` or ``true`` stays a string; a port ``8080`` becomes a number)."""

    __slots__ = ()


def _interpolate(value: Any, env: Mapping[str, str], path: str) -> Any:
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
            return _EnvText(out)
        return out
    if isinstance(value, Mapping):
        return {k: _interpolate(v, env, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _scalar_from_text(text: str) -> Any:
    if text == "":
        return ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return parsed if isinstance(parsed, (bool, int, float)) or parsed is None else text


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


def _apply_env_overrides(
    data: dict[str, Any], env: Mapping[str, str], exempt: frozenset[str] = frozenset()
) -> None:
    """``SIDECAR_<SECTION>_<KEY>`` sets ``section.key`` (``SIDECAR_CONTEXT_HTTP_EXTRACTOR_URL``:
    ``context.http_extractor.url``). A variable of an existing section that names none of its keys
    is an error, like an unknown key in the file; variables of other names are left alone."""
    hints = get_type_hints(Config)
    sections: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {}
    for section in dataclasses.fields(Config):
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
            target[path[-1]] = _EnvText(env[var])


def _referenced(value: Any) -> set[str]:
    """The environment variables the file names as ``${VAR}``."""
    if isinstance(value, str):
        return {m.group(1) for m in _VAR.finditer(value)}
    if isinstance(value, Mapping):
        return set().union(*(_referenced(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_referenced(v) for v in value))
    return set()


# --- validation --------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
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


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"config error: {path}: {message}")


def _build(tp: Any, value: Any, path: str) -> Any:
    if isinstance(value, _EnvText):
        value = str(value) if tp is str else _scalar_from_text(str(value))
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise _fail(path or "<root>", f"expected a mapping, got {_kind(value)}")
        hints = get_type_hints(tp)
        known = {f.name: f for f in dataclasses.fields(tp)}
        for key in value:
            if key not in known:
                raise _fail(_join(path, str(key)), "unknown key")
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            key_path = _join(path, name)
            if name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise _fail(key_path, "required key is missing")
                continue
            built = _build(hints[name], value[name], key_path)
            check = f.metadata.get("check")
            if check is not None and built is not None:
                complaint = check(built)
                if complaint:
                    raise _fail(key_path, complaint)
            kwargs[name] = built
        return tp(**kwargs)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = " | ".join(str(a) for a in allowed)
            raise _fail(path, f"expected one of {choices}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise _fail(path, f"expected a list, got {_kind(value)}")
        item = get_args(tp)[0]
        return tuple(_build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, f"expected a mapping, got {_kind(value)}")
        _, vt = get_args(tp)
        return {str(k): _build(vt, v, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(path, f"expected a string, got {_kind(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a programming error


# --- redaction ----------------------------------------------------------------------------------

REDACTED = "***"


# Query parameters that carry credentials in DSNs (``?password=...``) and URLs.
_SECRET_PARAM = re.compile(r"password|secret|token", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or credential query parameter) masked, for logs."""
    """``url`` with the password of its user info and credential query parameters masked."""
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


def _redact(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("secret") and isinstance(value, str):
                value = REDACTED if value else ""
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)  # any URL may carry a password, not only DSNs
            out[f.name] = _redact(value)
        return out
    if isinstance(obj, tuple):
        return [_redact(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _redact(v) for k, v in obj.items()}
    return obj
