"""The configuration's shape: one `@frozen` value class per section, with defaults and checks, and
``Config``, which builds itself from parsed YAML and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Literal

from ..errors import ConfigError
from ..frozen import frozen
from .checks import (
    SECRET,
    checked,
    non_negative,
    partitions_in_range,
    port_number,
    positive,
    route_path,
    time_zone,
    url_check,
)
from .environment import apply_env_overrides, interpolate, referenced
from .redaction import redact
from .validate import build, fail, kind


@frozen
class ListenConfig:
    host: str = "0.0.0.0"
    port: int = checked(port_number, 8080)


@frozen
class UpstreamConfig:
    url: str = checked(
        url_check(("http", "https"), "an http:// or https:// URL"), "http://127.0.0.1:8000"
    )
    connect_timeout_s: float = checked(positive, 5.0)
    read_timeout_s: float = checked(positive, 300.0)
    pool_size: int = checked(positive, 100)


@frozen
class RedisConfig:
    url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata={
            "check": url_check(("redis", "rediss", "unix"), "a redis:// or rediss:// URL"),
        },
    )
    key_prefix: str = "sidecar"
    session_ttl_s: int = checked(positive, 2_592_000)
    # Every Redis call is bounded: a hung Redis must not hang requests.
    socket_timeout_s: float = checked(positive, 0.5)
    connect_timeout_s: float = checked(positive, 0.5)
    # Outbox partitions; each session's keys and its partition share one hash tag (cluster-safe),
    # the partitions' slots spread evenly over a cluster's slot space.
    partitions: int = checked(partitions_in_range, 64)
    # true: a Redis Cluster; null: detected from the node's ``INFO cluster``.
    cluster: bool | None = None
    # Circuit breaker: after this many consecutive failures, skip Redis for breaker_reset_s.
    breaker_failures: int = checked(positive, 3)
    breaker_reset_s: float = checked(positive, 2.0)


@frozen
class PostgresConfig:
    dsn: str = field(
        default="postgresql://sidecar@127.0.0.1:5432/sidecar",
        metadata={"check": url_check(("postgresql", "postgres"), "a postgresql:// DSN")},
    )
    migrate_on_start: bool = True
    pool_max_size: int = checked(positive, 10)
    connect_timeout_s: float = checked(positive, 5.0)
    command_timeout_s: float = checked(positive, 10.0)
    # Messages, usage rows and deletion tombstones older than this are pruned (null: keep forever).
    retention_days: int | None = checked(positive, None)


@frozen
class SessionConfig:
    history_limit: int = checked(non_negative, 50)
    max_stored_messages: int = checked(positive, 1000)
    history_token_budget: int | None = None
    local_cache_size: int = checked(non_negative, 10_000)
    # ... and at most this many bytes of message text in it.
    local_cache_max_bytes: int = checked(non_negative, 64 * 1024 * 1024)
    # Bound on reading a session from PostgreSQL on the request path (restore, degraded load).
    restore_timeout_s: float = checked(positive, 1.0)
    max_body_bytes: int = checked(positive, 1_048_576)


@frozen
class RouteConfig:
    path: str = checked(route_path)
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


@frozen
class HttpExtractorConfig:
    url: str = ""
    timeout_ms: int = checked(positive, 50)


@frozen
class ContextConfig:
    extract_entities: bool = True
    rewrite: Literal["replace", "annotate", "off"] = "replace"
    timezone: str = checked(time_zone, "UTC")
    extractor: Literal["rules", "http"] = "rules"
    http_extractor: HttpExtractorConfig = field(default_factory=HttpExtractorConfig)
    # Extra topics for entity extraction: {name: [keywords...]}
    topics: dict[str, tuple[str, ...]] = field(default_factory=dict)


@frozen
class JwtConfig:
    secret: str = field(default="", metadata=SECRET)  # HS* key
    public_key_file: str = ""  # PEM public key (RS*, ES*)
    jwks_file: str = ""  # a JWKS document on disk
    jwks_url: str = ""  # a JWKS document fetched over HTTP(S), cached
    jwks_timeout_s: float = checked(positive, 2.0)
    algorithms: tuple[str, ...] = ("RS256", "ES256", "HS256")
    audience: str = ""
    issuer: str = ""
    tenant_claim: str = "tenant_id"
    user_claim: str = "sub"
    reject_invalid: bool = False


IdentityMode = Literal["credential", "jwt", "headers"]


@frozen
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


@frozen
class AdminConfig:
    token: str = field(default="", metadata=SECRET)
    # A second listener for /_sidecar/* (metrics, admin); health endpoints stay on both.
    listen: ListenConfig | None = None


@frozen
class ReadinessConfig:
    # Stores whose outage makes readyz 503; by default none (the sidecar serves through outages).
    require: tuple[Literal["redis", "postgres"], ...] = ()


@frozen
class MemoryConfig:
    profile: bool = False  # remember what users say about themselves across sessions
    profile_note: bool = False  # chat adapters: state the profile in a short system note


@frozen
class TracingConfig:
    enabled: bool = False
    exporter: Literal["otlp", "console", "none"] = "otlp"


@frozen
class WriterConfig:
    batch_size: int = checked(positive, 200)
    block_ms: int = checked(positive, 500)
    # Entries a consumer has held this long without acknowledging are claimed by another.
    claim_idle_ms: int = checked(positive, 30_000)
    # Attempts for an entry that fails for a data reason before it goes to the dead-letter stream.
    max_data_attempts: int = checked(positive, 3)
    # Above this many turns waiting for PostgreSQL, readyz lists a problem (0: never). It is
    # reported, never a reason for 503: PostgreSQL stays off the request path.
    ready_max_lag: int = checked(non_negative, 100_000)
    # Where turns go when neither Redis nor PostgreSQL takes them; replayed later.
    journal_path: str = "sidecar-journal.jsonl"
    journal_max_bytes: int = checked(positive, 64 * 1024 * 1024)
    # This writer's name in the outbox consumer group ("" = <hostname>-<pid>). Stable per pod, a
    # restart resumes its own pending entries at once; two live processes must not share it.
    consumer: str = ""


@frozen
class ShutdownConfig:
    # Bound for draining in-flight requests and flushing the writer after SIGTERM. Keep it below
    # the pod's terminationGracePeriodSeconds (default 30 s) minus the preStop delay.
    drain_timeout_s: float = checked(positive, 20.0)


@frozen
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


@frozen
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
                f"config error: expected a mapping at the top level, got {kind(data)}"
            )
        resolved = interpolate(data, env, "")
        apply_env_overrides(cls, resolved, env, frozenset(referenced(data)))
        config = build(cls, resolved, "")
        assert isinstance(config, Config)
        check_combinations(config)
        return config

    def redacted(self) -> dict[str, Any]:
        """The resolved config as plain data with passwords and tokens masked."""
        out: dict[str, Any] = redact(self)
        return out


def check_combinations(config: Config) -> None:
    """Rules that span keys; each failure names the key to change."""
    identity = config.identity
    if identity.trust_headers and identity.mode not in (None, "headers"):
        raise fail(
            "identity.trust_headers",
            f"true is the older spelling of mode 'headers' and conflicts with mode {identity.mode!r}",
        )
    if identity.effective_mode == "jwt":
        jwt = identity.jwt
        if not (jwt.secret or jwt.public_key_file or jwt.jwks_file or jwt.jwks_url):
            raise fail(
                "identity.jwt",
                "mode 'jwt' needs a key: set secret, public_key_file, jwks_file or jwks_url",
            )
    admin = config.admin.listen
    if admin is not None and admin.port == config.listen.port and admin.port != 0:
        raise fail("admin.listen.port", "must differ from listen.port")
