"""The real command line: ``python -m sidecar check-config`` and ``serve`` as child processes."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import sidecar
from tests.harness import FakeUpstream, SidecarProcess

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sidecar ARGS`` with no ``SIDECAR_*`` variables but those in ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO_ROOT,
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, text: str, name: str = "sidecar.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: {port: 8080}\nredis: {url: redis://h/0, colour: blue}\n", "redis.colour"),
        ("listen: {port: eighty}\n", "listen.port: expected an integer, got 'eighty'"),
        (
            "redis: {url: localhost}\n",
            "config error: redis.url: expected a redis:// or rediss:// URL, got 'localhost'",
        ),
        ("routes:\n  - {path: /a, adapter: soap}\n", "routes[0].adapter"),
        ("listen: {port: [8080\n", "sidecar.yaml"),
        ("listen:\n  port: 1\n   host: x\n", "sidecar.yaml"),
    ],
    ids=["unknown-key", "wrong-type", "bad-url", "bad-literal", "invalid-yaml", "bad-indent"],
)
def test_check_config_rejects_with_one_line_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    line = one_error_line(run_cli("check-config", "-c", str(write(tmp_path, text))))
    assert expected in line


def test_check_config_missing_file(tmp_path: Path) -> None:
    line = one_error_line(run_cli("check-config", "-c", str(tmp_path / "absent.yaml")))
    assert "absent.yaml" in line
    assert "not found" in line


def test_no_config_given_at_all() -> None:
    line = one_error_line(run_cli("check-config"))
    assert "SIDECAR_CONFIG" in line


def test_config_named_by_sidecar_config(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: {port: 9321}\n")
    result = run_cli("check-config", env={"SIDECAR_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["listen"]["port"] == 9321


def test_interpolation_and_overrides_and_redaction(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listen: {host: '${BIND_HOST}', port: '${BIND_PORT:-8123}'}\n"
        "upstream: {url: 'http://file-upstream:1'}\n"
        "redis: {url: 'redis://:${REDIS_PASSWORD}@cache:6379/${REDIS_DB:-4}'}\n"
        "admin: {token: '${TOKEN_FROM_FILE:-file-token-secret}'}\n",
    )
    result = run_cli(
        "check-config",
        "-c",
        str(path),
        env={"BIND_HOST": "10.1.2.3", "REDIS_PASSWORD": "redis-pass-secret"},
    )
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["listen"] == {"host": "10.1.2.3", "port": 8123}
    assert shown["redis"]["url"] == "redis://:***@cache:6379/4"
    assert shown["admin"]["token"] == "***"
    assert "redis-pass-secret" not in result.stdout
    assert "file-token-secret" not in result.stdout

    overrides = {
        "SIDECAR_UPSTREAM_URL": "http://env-upstream:8000/base",
        "SIDECAR_REDIS_URL": "rediss://user:env-redis-secret@env-cache:6380/1",
        "SIDECAR_POSTGRES_DSN": "postgresql://app:env-pg-secret@env-db:5433/app",
        "SIDECAR_LISTEN_HOST": "0.0.0.0",
        "SIDECAR_LISTEN_PORT": "9999",
        "SIDECAR_ADMIN_TOKEN": "987654321",
    }
    result = run_cli(
        "check-config", "-c", str(path), env={"BIND_HOST": "x", "REDIS_PASSWORD": "p", **overrides}
    )
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["upstream"]["url"] == "http://env-upstream:8000/base"
    assert shown["redis"]["url"] == "rediss://user:***@env-cache:6380/1"
    assert shown["postgres"]["dsn"] == "postgresql://app:***@env-db:5433/app"
    assert shown["listen"] == {"host": "0.0.0.0", "port": 9999}
    assert shown["admin"]["token"] == "***"
    for secret in ("env-redis-secret", "env-pg-secret", "987654321"):
        assert secret not in result.stdout


def test_bad_override_is_reported_like_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: {port: 8080}\n")
    result = run_cli("check-config", "-c", str(path), env={"SIDECAR_REDIS_URL": "localhost"})
    assert "redis.url" in one_error_line(result)


def test_misspelt_override_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: {port: 8080}\n")
    env = {"SIDECAR_SESSION_HISTORY_LIMT": "5", "SIDECAR_SERVICE_HOST": "10.96.0.12"}
    for command in ("check-config", "serve"):
        line = one_error_line(run_cli(command, "-c", str(path), env=env))
        assert "SIDECAR_SESSION_HISTORY_LIMT" in line
        assert "SIDECAR_SESSION_HISTORY_LIMIT" in line


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sidecar {sidecar.__version__}\n"
    assert sidecar.__version__ == importlib.metadata.version("session-sidecar")


def test_example_config_passes_check_config() -> None:
    result = run_cli(
        "check-config", "-c", "config.example.yaml", env={"SIDECAR_IDENTITY_SECRET": "s3cret"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    shown: dict[str, Any] = yaml.safe_load(result.stdout)
    assert shown["listen"] == {"host": "0.0.0.0", "port": 8080}
    assert shown["postgres"]["dsn"] == "postgresql://sidecar@127.0.0.1:5432/sidecar"
    assert shown["admin"]["token"] == ""
    assert [r["path"] for r in shown["routes"]] == [
        "/api/tasks",
        "/api/v1/tasks",
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
    ]


def test_check_config_warns_when_the_credential_hash_has_no_secret() -> None:
    result = run_cli("check-config", "-c", "config.example.yaml")
    assert result.returncode == 0
    assert result.stderr.startswith("warning: identity.secret is not set")
    assert yaml.safe_load(result.stdout)["identity"]["secret"] == ""


def test_serve_with_a_bad_config_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "redis: {url: localhost}\n")
    assert "redis.url" in one_error_line(run_cli("serve", "-c", str(path)))


async def test_serve_answers_and_exits_0_on_sigterm(
    sidecar_config: dict[str, Any], upstream: FakeUpstream
) -> None:
    async with SidecarProcess(sidecar_config) as proc:
        async with aiohttp.ClientSession() as http:
            async with http.get(proc.url + "/echo/hello?x=1") as resp:
                assert resp.status == 200
                assert (await resp.json())["query"] == [["x", "1"]]
            async with http.get(proc.url + "/_sidecar/readyz") as resp:
                assert resp.status == 200
        proc.terminate()
        assert await proc.wait(timeout_s=15) == 0, proc.log_tail()
