"""Configuration: validation messages, interpolation, environment overrides, redaction, and the
example file at the repository root."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import yaml

from sidecar.config import Config, RouteConfig, load_config
from sidecar.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "config.example.yaml"


def build(data: Any, env: dict[str, str] | None = None) -> Config:
    return Config.from_mapping(data, env or {})


def error_of(data: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        build(data, env)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("config error: ")
    return message


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"redis": {"url": "localhost"}}, "redis.url: expected a redis:// or rediss:// URL"),
        ({"upstream": {"url": "127.0.0.1:8000"}}, "upstream.url: expected an http://"),
        ({"postgres": {"dsn": "mysql://x@y/z"}}, "postgres.dsn: expected a postgresql://"),
        ({"listen": {"port": "eighty"}}, "listen.port: expected an integer, got 'eighty'"),
        ({"listen": {"port": 70000}}, "listen.port: expected a port number"),
        ({"listen": {"prot": 80}}, "listen.prot: unknown key"),
        ({"lisen": {"port": 80}}, "lisen: unknown key"),
        ({"upstream": {"read_timeout_s": 0}}, "upstream.read_timeout_s: expected a positive"),
        ({"upstream": {"read_timeout_s": True}}, "upstream.read_timeout_s: expected a number"),
        ({"postgres": {"migrate_on_start": "yes please"}}, "postgres.migrate_on_start: expected"),
        ({"session": {"history_limit": -1}}, "session.history_limit: expected zero or a positive"),
        ({"session": []}, "session: expected a mapping, got a list"),
        ({"context": {"rewrite": "rewrite"}}, "context.rewrite: expected one of replace"),
        ({"context": {"timezone": "Mars/Base"}}, "context.timezone: expected an IANA time zone"),
        ({"routes": [{"path": "/a", "adapter": "soap"}]}, "routes[0].adapter: expected one of"),
        ({"routes": [{"path": "/_sidecar/x"}]}, "routes[0].path: expected an absolute path"),
        ({"routes": [{"adapter": "tasks"}]}, "routes[0].path: required key is missing"),
        ({"routes": [{"path": "/a", "colour": 1}]}, "routes[0].colour: unknown key"),
        ({"admin": {"token": 123}}, "admin.token: expected a string, got an integer"),
        (["not", "a", "mapping"], "expected a mapping at the top level"),
        (
            {"identity": {"mode": "jwt", "trust_headers": True}},
            "identity.trust_headers: true is the older spelling of mode 'headers'",
        ),
        ({"identity": {"mode": "jwt"}}, "identity.jwt: mode 'jwt' needs a key"),
        ({"identity": {"mode": "oauth"}}, "identity.mode: expected one of credential"),
        ({"readiness": {"require": ["mysql"]}}, "readiness.require[0]: expected one of redis"),
        ({"admin": {"listen": {"port": 8080}}}, "admin.listen.port: must differ from listen.port"),
        ({"routes": [{"path": "/a", "preset": "x"}]}, "routes[0].preset: expected one of shannon"),
    ],
)
def test_bad_values_name_the_key(data: Any, expected: str) -> None:
    assert expected in error_of(data)


def test_identity_mode_follows_the_older_trust_headers_spelling() -> None:
    assert build({}).identity.effective_mode == "credential"
    assert build({"identity": {"trust_headers": True}}).identity.effective_mode == "headers"
    assert build({"identity": {"mode": "headers"}}).identity.effective_mode == "headers"
    jwt = build({"identity": {"mode": "jwt", "jwt": {"secret": "s"}}})
    assert jwt.identity.effective_mode == "jwt"


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path, env={}) == Config()


def test_missing_file_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config error: file not found: .*nope\.yaml$"):
        load_config(tmp_path / "nope.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen:\n  port: [1, 2\nredis: {url: x}\n")
    with pytest.raises(
        ConfigError, match=r"^config error: .*bad\.yaml: .*\(line \d+, column \d+\)$"
    ):
        load_config(bad, env={})


def test_no_file_given(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SIDECAR_CONFIG"):
        load_config(None, env={})
    path = tmp_path / "c.yaml"
    path.write_text("listen: {port: 9123}\n")
    assert load_config(None, env={"SIDECAR_CONFIG": str(path)}).listen.port == 9123


# --- interpolation ------------------------------------------------------------------------------


def test_env_interpolation_with_and_without_defaults() -> None:
    data = {
        "listen": {"host": "${HOST}", "port": "${PORT:-8181}"},
        "redis": {"url": "redis://:${REDIS_PW}@${REDIS_HOST:-127.0.0.1}:6379/${DB:-2}"},
        "postgres": {"migrate_on_start": "${MIGRATE:-false}"},
        "upstream": {"read_timeout_s": "${READ_TIMEOUT:-}"},
    }
    with pytest.raises(ConfigError, match=r"upstream\.read_timeout_s: expected a number"):
        build(data, {"HOST": "10.0.0.1", "REDIS_PW": "pw"})
    data["upstream"] = {"read_timeout_s": "${READ_TIMEOUT:-12.5}"}
    config = build(data, {"HOST": "10.0.0.1", "REDIS_PW": "pw"})
    assert config.listen.host == "10.0.0.1"
    assert config.listen.port == 8181
    assert config.redis.url == "redis://:pw@127.0.0.1:6379/2"
    assert config.postgres.migrate_on_start is False
    assert config.upstream.read_timeout_s == 12.5

    env = {"HOST": "h", "REDIS_PW": "pw", "PORT": "9000", "REDIS_HOST": "cache", "DB": "5"}
    env |= {"MIGRATE": "true", "READ_TIMEOUT": "3"}
    config = build(data, env)
    assert config.listen.port == 9000
    assert config.redis.url == "redis://:pw@cache:6379/5"
    assert config.postgres.migrate_on_start is True
    assert config.upstream.read_timeout_s == 3.0


def test_unset_variable_without_default_names_key_and_variable() -> None:
    message = error_of({"admin": {"token": "${NO_SUCH_TOKEN_VAR}"}})
    assert "admin.token" in message
    assert "NO_SUCH_TOKEN_VAR" in message


@pytest.mark.parametrize("token", ["12345", "0x1F", "true", "null", "1_000", "3.0"])
def test_string_values_from_the_environment_stay_strings(token: str) -> None:
    via_default = build({"admin": {"token": "${T:-" + token + "}"}})
    via_variable = build({"admin": {"token": "${T}"}}, {"T": token})
    via_override = build({}, {"SIDECAR_ADMIN_TOKEN": token})
    assert via_default.admin.token == via_variable.admin.token == token
    assert via_override.admin.token == token


# --- overrides ----------------------------------------------------------------------------------


def test_sidecar_env_overrides_beat_the_file() -> None:
    data = {
        "listen": {"host": "127.0.0.1", "port": 8080},
        "upstream": {"url": "http://file-upstream:1"},
        "redis": {"url": "redis://file-redis:6379/0"},
        "postgres": {"dsn": "postgresql://file@pg/db"},
        "admin": {"token": "from-file"},
    }
    env = {
        "SIDECAR_UPSTREAM_URL": "http://env-upstream:8000",
        "SIDECAR_REDIS_URL": "redis://env-redis:6380/3",
        "SIDECAR_POSTGRES_DSN": "postgresql://env@env-pg:5433/envdb",
        "SIDECAR_LISTEN_HOST": "0.0.0.0",
        "SIDECAR_LISTEN_PORT": "9999",
        "SIDECAR_ADMIN_TOKEN": "from-env",
    }
    config = build(data, env)
    assert config.upstream.url == "http://env-upstream:8000"
    assert config.redis.url == "redis://env-redis:6380/3"
    assert config.postgres.dsn == "postgresql://env@env-pg:5433/envdb"
    assert config.listen.host == "0.0.0.0"
    assert config.listen.port == 9999
    assert config.admin.token == "from-env"
    # Without a file section at all, too.
    assert build({}, env).listen.port == 9999


def test_bad_env_override_names_the_key() -> None:
    assert "listen.port: expected an integer" in error_of({}, {"SIDECAR_LISTEN_PORT": "http"})
    assert "redis.url" in error_of({}, {"SIDECAR_REDIS_URL": "localhost"})


def test_misspelt_env_override_is_an_error_naming_the_closest_key() -> None:
    message = error_of({}, {"SIDECAR_SESSION_HISTORY_LIMT": "5"})
    assert message.startswith("config error: SIDECAR_SESSION_HISTORY_LIMT: ")
    assert "SIDECAR_SESSION_HISTORY_LIMIT (session.history_limit)" in message
    message = error_of({}, {"SIDECAR_POSTGRES_PORT": "5432"})
    assert "SIDECAR_POSTGRES_PORT" in message


def test_env_override_reaches_nested_keys() -> None:
    env = {"SIDECAR_CONTEXT_HTTP_EXTRACTOR_URL": "http://ner:9000/extract"}
    assert build({}, env).context.http_extractor.url == "http://ner:9000/extract"
    env = {"SIDECAR_CONTEXT_HTTP_EXTRACTOR_TIMEOUT_MS": "75"}
    assert build({}, env).context.http_extractor.timeout_ms == 75
    # A section the file leaves null (admin.listen) is created from the environment.
    listen = build({"admin": {"listen": None}}, {"SIDECAR_ADMIN_LISTEN_PORT": "9090"}).admin.listen
    assert listen is not None
    assert (listen.host, listen.port) == ("0.0.0.0", 9090)


def test_variables_of_no_section_and_kubernetes_service_links_are_ignored() -> None:
    # What Kubernetes injects for Services named `sidecar` and `sidecar-redis` (enableServiceLinks).
    env = {
        "SIDECAR_SERVICE_HOST": "10.96.0.12",
        "SIDECAR_SERVICE_PORT": "80",
        "SIDECAR_PORT": "tcp://10.96.0.12:80",
        "SIDECAR_PORT_80_TCP": "tcp://10.96.0.12:80",
        "SIDECAR_REDIS_SERVICE_HOST": "10.96.0.13",
        "SIDECAR_REDIS_SERVICE_PORT": "6379",
        "SIDECAR_REDIS_SERVICE_PORT_REDIS": "6379",
        "SIDECAR_REDIS_PORT": "tcp://10.96.0.13:6379",
        "SIDECAR_REDIS_PORT_6379_TCP": "tcp://10.96.0.13:6379",
        "SIDECAR_REDIS_PORT_6379_TCP_PROTO": "tcp",
        "SIDECAR_REDIS_PORT_6379_TCP_PORT": "6379",
        "SIDECAR_REDIS_PORT_6379_TCP_ADDR": "10.96.0.13",
        "SIDECAR_NOSUCHSECTION_KEY": "x",
        "SIDECAR_CONFIG": "/etc/sidecar/config.yaml",
    }
    assert build({}, env) == Config()


def test_variables_the_file_references_are_not_overrides() -> None:
    data = {"postgres": {"dsn": "postgresql://app:${SIDECAR_POSTGRES_PASSWORD}@db:5432/app"}}
    config = build(data, {"SIDECAR_POSTGRES_PASSWORD": "s3cret"})
    assert config.postgres.dsn == "postgresql://app:s3cret@db:5432/app"


# --- redaction ----------------------------------------------------------------------------------


def test_redacted_hides_every_secret() -> None:
    config = build(
        {
            "upstream": {"url": "https://svc:upstream-secret@backend.internal/api"},
            "redis": {"url": "redis://:redis-secret@cache:6379/0"},
            "postgres": {"dsn": "postgresql://app:pg-secret@[::1]:5432/db?sslmode=require"},
            "admin": {"token": "admin-secret"},
        }
    )
    shown = yaml.safe_dump(config.redacted())
    for secret in ("upstream-secret", "redis-secret", "pg-secret", "admin-secret"):
        assert secret not in shown
    redacted = config.redacted()
    assert redacted["redis"]["url"] == "redis://:***@cache:6379/0"
    assert redacted["postgres"]["dsn"] == "postgresql://app:***@[::1]:5432/db?sslmode=require"
    assert redacted["upstream"]["url"] == "https://svc:***@backend.internal/api"
    assert redacted["admin"]["token"] == "***"
    assert build({"admin": {"token": "x://admin-secret"}}).redacted()["admin"]["token"] == "***"


def test_password_in_dsn_query_is_redacted() -> None:
    config = build({"postgres": {"dsn": "postgresql://app@pg/db?password=query-secret&x=1"}})
    dsn = config.redacted()["postgres"]["dsn"]
    assert "query-secret" not in dsn
    assert dsn.startswith("postgresql://app@pg/db?")
    assert "x=1" in dsn


def test_redaction_keeps_secret_free_values() -> None:
    redacted = build({"redis": {"url": "redis://cache:6379/0"}}).redacted()
    assert redacted["redis"]["url"] == "redis://cache:6379/0"
    assert redacted["admin"]["token"] == ""


# --- the example file ---------------------------------------------------------------------------


def _missing_keys(tp: Any, value: Any, path: str) -> list[str]:
    """Dataclass fields absent from ``value``, recursively (list items of dataclasses too)."""
    missing: list[str] = []
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        for f in dataclasses.fields(tp):
            key = f"{path}.{f.name}" if path else f.name
            if not isinstance(value, dict) or f.name not in value:
                missing.append(key)
                continue
            inner = hints[f.name]
            if getattr(inner, "__origin__", None) is tuple and dataclasses.is_dataclass(
                inner.__args__[0]
            ):
                for i, item in enumerate(value[f.name]):
                    missing += _missing_keys(inner.__args__[0], item, f"{key}[{i}]")
            else:
                missing += _missing_keys(inner, value[f.name], key)
    return missing


def test_example_documents_every_key_with_its_default() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert _missing_keys(Config, raw, "") == []
    assert raw["routes"], "the example shows the default routes"
    assert load_config(EXAMPLE, env={}) == Config()
    assert all(isinstance(r, RouteConfig) for r in Config().routes)


def test_example_has_a_comment_for_every_key() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # blank, a comment, or a section heading
        previous = lines[i - 1].strip() if i else ""
        assert "#" in line or previous.startswith("#"), f"line {i + 1} has no comment: {line}"


def test_example_takes_secrets_from_the_environment() -> None:
    text = EXAMPLE.read_text()
    assert "${SIDECAR_ADMIN_TOKEN:-}" in text
    env = {
        "SIDECAR_POSTGRES_DSN": "postgresql://u:pw-from-env@db:5432/x",
        "SIDECAR_ADMIN_TOKEN": "tok",
    }
    config = load_config(EXAMPLE, env=env)
    assert config.postgres.dsn == env["SIDECAR_POSTGRES_DSN"]
    assert config.admin.token == "tok"
