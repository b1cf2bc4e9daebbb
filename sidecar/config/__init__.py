"""Configuration: YAML with ``${VAR}`` interpolation and ``SIDECAR_*`` overrides, as frozen dataclasses.

Everything is validated up front; the first problem found is reported as one line that names the
key path (``config error: redis.url: expected a redis:// or rediss:// URL, got 'localhost'``).
The package's parts: ``model`` (the sections), ``checks`` (per-field checks), ``environment``
(interpolation and overrides), ``validate`` (typed building), ``redaction``, ``loader`` (the file).
"""

from .checks import SECRET, Check
from .environment import CONFIG_ENV, ENV_PREFIX
from .loader import load_config
from .model import (
    AdminConfig,
    Config,
    ContextConfig,
    HttpExtractorConfig,
    IdentityConfig,
    IdentityMode,
    JwtConfig,
    ListenConfig,
    LoggingConfig,
    MemoryConfig,
    PostgresConfig,
    ReadinessConfig,
    RedisConfig,
    RouteConfig,
    SessionConfig,
    ShutdownConfig,
    TracingConfig,
    UpstreamConfig,
    WriterConfig,
)
from .redaction import REDACTED, redact_url

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "REDACTED",
    "SECRET",
    "AdminConfig",
    "Check",
    "Config",
    "ContextConfig",
    "HttpExtractorConfig",
    "IdentityConfig",
    "IdentityMode",
    "JwtConfig",
    "ListenConfig",
    "LoggingConfig",
    "MemoryConfig",
    "PostgresConfig",
    "ReadinessConfig",
    "RedisConfig",
    "RouteConfig",
    "SessionConfig",
    "ShutdownConfig",
    "TracingConfig",
    "UpstreamConfig",
    "WriterConfig",
    "load_config",
    "redact_url",
]
