"""The alert rules and the Grafana dashboard in k8s/monitoring: valid, tested with promtool, and
asking only for metrics the sidecar exports.

promtool comes from Debian's `prometheus` package (scripts/ensure-system-deps.sh installs it when
run as root). Without it these tests fail, saying so: they are not skipped.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import RunningSidecar

StartSidecar = Callable[..., Awaitable[RunningSidecar]]

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "k8s" / "monitoring"
RULE_TESTS = ROOT / "tests" / "alerts" / "sidecar.test.yaml"

ALERTS = {
    "SidecarUpstreamErrorRatioHigh",
    "SidecarServerErrors",
    "SidecarOutboxLagGrowing",
    "SidecarDeadLetters",
    "SidecarRedisCircuitOpen",
}


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed, so the alert rules cannot be checked. Install Debian's "
            "`prometheus` package (scripts/ensure-system-deps.sh does it when run as root), or "
            "deselect these tests explicitly with -k 'not promtool'.",
            pytrace=False,
        )
    return path


def _rule_groups() -> list[dict[str, Any]]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text(encoding="utf-8"))
    assert rule["kind"] == "PrometheusRule"
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_rules_cover_the_failures_an_operator_must_hear_of() -> None:
    alerts = {r["alert"] for g in _rule_groups() for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    for group in _rule_groups():
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"]
            assert rule["annotations"]["description"]


def test_promtool_checks_and_unit_tests_the_rules(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "sidecar.rules.yaml").write_text(
        yaml.safe_dump({"groups": _rule_groups()}, sort_keys=False), encoding="utf-8"
    )
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    check = _run(promtool, "check", "rules", "sidecar.rules.yaml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout
    test = _run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr
    # Every alert is shown firing by at least one case.
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == ALERTS


def test_promtool_unit_tests_fail_when_an_alert_misbehaves(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: with the dead-letter alert disabled, they do."""
    groups = _rule_groups()
    for rule in groups[0]["rules"]:
        if rule.get("alert") == "SidecarDeadLetters":
            rule["expr"] = "vector(0) > 1"
    (tmp_path / "sidecar.rules.yaml").write_text(
        yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8"
    )
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    test = _run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert test.returncode != 0
    assert "SidecarDeadLetters" in test.stdout + test.stderr


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text("utf-8"))
    return dashboard


def test_dashboard_shows_what_an_operator_looks_at() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "session-sidecar"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for needed in (
        "sidecar_http_requests_total",
        "sum by (code)",
        "histogram_quantile(0.99, sum by (le) (rate(sidecar_overhead_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(sidecar_upstream_duration_seconds_bucket",
        "sidecar_degraded_requests_total",
        "sidecar_outbox_lag",
        "sidecar_writer_retries_total",
        "sidecar_writer_dead_letters_total",
        "sidecar_redis_circuit_open",
    ):
        assert needed in exprs, f"no panel queries {needed}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables


# --- against a live scrape ------------------------------------------------------------------------

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
}
OWN_METRIC = re.compile(r"\b(?:sidecar|process|python)_[a-zA-Z0-9_]+")


async def _live_scrape(start_sidecar: StartSidecar, http: aiohttp.ClientSession) -> str:
    """The metrics of a sidecar that has served a turn, a pass-through and an error."""
    sidecar = await start_sidecar()
    async with http.post(sidecar.url + "/api/tasks", json={"query": "hello"}) as resp:
        assert resp.status == 200
    async with http.get(sidecar.url + "/echo/x") as resp:
        assert resp.status == 200
    async with http.post(sidecar.url + "/api/tasks", data=b"{") as resp:
        assert resp.status == 400
    async with http.get(sidecar.url + "/_sidecar/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def _exported(scrape: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(scrape):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def _queried() -> dict[str, set[str]]:
    """Metric names each file's queries use."""
    rules = " ".join(r["expr"] for g in _rule_groups() for r in g["rules"])
    panels = " ".join(t["expr"] for p in _dashboard()["panels"] for t in p["targets"])
    variables = " ".join(
        v["definition"] for v in _dashboard()["templating"]["list"] if "definition" in v
    )
    return {
        "prometheusrule.yaml": set(OWN_METRIC.findall(rules)),
        "dashboard.json": set(OWN_METRIC.findall(panels + " " + variables)),
    }


async def test_dashboard_and_rules_ask_only_for_exported_metrics(
    start_sidecar: StartSidecar, http: aiohttp.ClientSession
) -> None:
    exported = _exported(await _live_scrape(start_sidecar, http))
    for source, names in _queried().items():
        assert len(names) >= 5, f"{source}: found only {names}"
        missing = names - exported
        assert not missing, f"{source} queries metrics the sidecar does not export: {missing}"


async def test_promtool_accepts_a_live_scrape(
    promtool: str, start_sidecar: StartSidecar, http: aiohttp.ClientSession
) -> None:
    scrape = await _live_scrape(start_sidecar, http)
    assert "sidecar_http_requests_total{" in scrape
    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=scrape,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
