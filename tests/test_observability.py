"""What an operator sees of each request: counted in the metrics whoever made the answer, a
request id and trace context that reach the upstream and come back, JSON access logs that hold
no credential and no message text, and /_sidecar/* on its own port with ``admin.listen``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar import metrics, observe
from sidecar.devservices import free_port
from sidecar.metrics import Tally
from tests.harness import (
    ADMIN_TOKEN,
    FakeUpstream,
    RunningSidecar,
    SidecarProcess,
    answer_text,
)
from tests.harness.rawhttp import raw

StartSidecar = Callable[..., Awaitable[RunningSidecar]]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def scrape(
    http: aiohttp.ClientSession, base: str
) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Every sample of /_sidecar/metrics: (name, sorted labels) -> value."""
    async with http.get(base + "/_sidecar/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests_counted(samples: dict[tuple[str, tuple[Any, ...]], float], **labels: str) -> float:
    key = ("sidecar_http_requests_total", tuple(sorted(labels.items())))
    return samples.get(key, 0.0)


# --- metrics --------------------------------------------------------------------------------------


async def test_every_answer_is_counted_whoever_made_it(
    start_sidecar: StartSidecar, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    # A pass-through 200, under a path the client chose.
    async with http.get(sidecar.url + "/echo/client-chosen-path-123") as resp:
        assert resp.status == 200
    # An intercepted request the sidecar refuses itself.
    async with http.post(sidecar.url + "/api/tasks", data=b"{not json") as resp:
        assert resp.status == 400
    # An upstream 5xx, relayed.
    upstream.tasks_status = 503
    async with http.post(sidecar.url + "/api/tasks", json={"query": "hello"}) as resp:
        assert resp.status == 503
    # The upstream stopped: the sidecar answers 502.
    await upstream.stop()
    async with http.post(sidecar.url + "/api/tasks", json={"query": "hello"}) as resp:
        assert resp.status == 502
    async with http.get(sidecar.url + "/echo/x") as resp:
        assert resp.status == 502

    samples = await scrape(http, sidecar.url)
    assert requests_counted(samples, route="passthrough", adapter="none", code="200") == 1
    assert requests_counted(samples, route="/api/tasks", adapter="tasks", code="400") == 1
    assert requests_counted(samples, route="/api/tasks", adapter="tasks", code="503") == 1
    assert requests_counted(samples, route="/api/tasks", adapter="tasks", code="502") == 1
    assert requests_counted(samples, route="passthrough", adapter="none", code="502") == 1

    def errors(route: str, adapter: str, reason: str) -> float:
        labels = (("adapter", adapter), ("reason", reason), ("route", route))
        return samples[("sidecar_upstream_errors_total", labels)]

    assert errors("/api/tasks", "tasks", "status_5xx") == 1
    assert errors("/api/tasks", "tasks", "unreachable") == 1
    assert errors("passthrough", "none", "unreachable") == 1
    assert errors("/api/tasks", "tasks", "timeout") == 0

    # Upstream latency: the two answers that came (200, 503), none for the refused or failed.
    def upstream_count(route: str, adapter: str) -> float:
        labels = (("adapter", adapter), ("route", route))
        return samples.get(("sidecar_upstream_duration_seconds_count", labels), 0.0)

    assert upstream_count("passthrough", "none") == 1
    assert upstream_count("/api/tasks", "tasks") == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
    # No label carries what a client chose.
    assert not any("client-chosen" in str(labels) for _, labels in samples)


async def test_a_failure_to_log_an_answer_does_not_cost_the_client_its_answer(
    start_sidecar: StartSidecar,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The access line and the counts are written once the answer is on its way: a failure
    there (a broken log stream, say) is reported, and the answers stand."""
    sidecar = await start_sidecar()
    failures: list[str] = []

    def broken_access_log(values: Any) -> None:
        failures.append(values[0])
        raise OSError("the log stream is gone")

    monkeypatch.setattr(observe, "write_access", broken_access_log)
    for query in ("first", "second"):
        async with http.post(sidecar.url + "/api/tasks", json={"query": query}) as resp:
            assert resp.status == 200
            assert (await resp.json())["result"] == answer_text(query)
            assert resp.headers["X-Request-ID"] in failures
    samples = await scrape(http, sidecar.url)
    assert requests_counted(samples, route="/api/tasks", adapter="tasks", code="200") == 2


class PublicOnly:
    """A histogram child as a prometheus_client release that keeps its parts elsewhere would
    show it: ``observe`` and nothing else."""

    def __init__(self, child: Any) -> None:
        self.observe = child.observe


@pytest.mark.parametrize("parts", [True, False], ids=["tallied", "without-the-parts"])
def test_observations_tallied_render_as_observed_one_by_one(
    parts: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request path tallies histogram observations and adds them at the scrape: what the
    scrape shows is what observing each one would have shown (every bucket, count and sum).
    So it does with a prometheus_client whose histograms lack the parts a tally adds to."""
    monkeypatch.setattr(metrics, "HISTOGRAM_PARTS", parts)
    buckets = (0.005, 0.01, 0.025, 0.5, 1.0)
    amounts = [0.0, 0.004, 0.005, 0.0050001, 0.01, 0.02, 0.5, 0.75, 1.0, 2.5, 300.0, 0.5]
    rendered = []
    for tallied in (False, True):
        registry = CollectorRegistry()
        hist = Histogram("t_seconds", "t", ["route"], buckets=buckets, registry=registry)
        tally = Tally()
        for i, amount in enumerate(amounts):
            child = hist.labels("a" if i % 3 else "b")
            if not parts:
                child = PublicOnly(child)
            if tallied:
                tally.observe(child, amount)
            else:
                child.observe(amount)
        tally.flush()
        rendered.append(
            {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(generate_latest(registry).decode())
                for s in family.samples
                if not s.name.endswith("_created")
            }
        )
    direct, tallied_samples = rendered
    assert direct.keys() == tallied_samples.keys()
    for key, value in direct.items():
        assert tallied_samples[key] == pytest.approx(value, rel=1e-12), key


async def test_overhead_is_observed_per_route(
    start_sidecar: StartSidecar, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    told_ms = []
    for _ in range(2):
        async with http.post(sidecar.url + "/api/tasks", json={"query": "hi"}) as resp:
            assert resp.status == 200
            timing = resp.headers["Server-Timing"]
            assert timing.startswith("sidecar;dur=")
            told_ms.append(float(timing.removeprefix("sidecar;dur=")))
    samples = await scrape(http, sidecar.url)
    labels = (("adapter", "tasks"), ("route", "/api/tasks"))
    assert samples[("sidecar_overhead_seconds_count", labels)] == 2
    assert samples[("sidecar_overhead_seconds_sum", labels)] > 0
    # The metric holds the durations the clients were told.
    assert samples[("sidecar_overhead_seconds_sum", labels)] == pytest.approx(sum(told_ms) / 1000)
    # The metrics scrape itself is counted under its endpoint's name.
    samples = await scrape(http, sidecar.url)
    assert requests_counted(samples, route="/_sidecar/metrics", adapter="none", code="200") >= 1


# --- request ids and trace context ----------------------------------------------------------------


async def test_request_id_and_trace_reach_the_upstream_and_come_back(
    start_sidecar: StartSidecar, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    for method, path, body in (("GET", "/echo/a", None), ("POST", "/api/tasks", {"query": "hi"})):
        upstream.reset()
        headers = {"X-Request-ID": f"client-id-{method}", "traceparent": TRACEPARENT}
        async with http.request(method, sidecar.url + path, json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Request-ID"] == f"client-id-{method}"
            assert resp.headers["traceresponse"].split("-")[1] == TRACE_ID
        (seen,) = upstream.requests_to(path.rstrip("/"), method)
        assert seen.headers["X-Request-ID"] == f"client-id-{method}"
        version, trace_id, _parent, flags = seen.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")


async def test_a_malformed_traceparent_starts_a_new_trace(
    start_sidecar: StartSidecar, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    for bad in (
        "garbage",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
    ):
        upstream.reset()
        async with http.get(sidecar.url + "/echo/c", headers={"traceparent": bad}) as resp:
            assert resp.status == 200
            returned = resp.headers["traceresponse"].split("-")[1]
        forwarded = upstream.requests_to("/echo/c")[0].headers["traceparent"]
        assert forwarded.split("-")[1] == returned
        assert returned not in (TRACE_ID, "0" * 32)
        assert len(returned) == 32


async def test_insane_request_ids_are_replaced_and_every_answer_has_one(
    start_sidecar: StartSidecar, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    for given in ("x" * 300, "has spaces in it", "<script>"):
        upstream.reset()
        async with http.get(sidecar.url + "/echo/b", headers={"X-Request-ID": given}) as resp:
            assert resp.status == 200
            made = resp.headers["X-Request-ID"]
        assert made != given
        assert upstream.requests_to("/echo/b")[0].headers["X-Request-ID"] == made
    # The sidecar's own errors carry an id (and a trace) too, and differ per request.
    ids = set()
    for _ in range(2):
        async with http.post(sidecar.url + "/api/tasks", data=b"[") as resp:
            assert resp.status == 400
            ids.add(resp.headers["X-Request-ID"])
            assert resp.headers["traceresponse"].startswith("00-")
    assert len(ids) == 2


# --- logs -----------------------------------------------------------------------------------------


async def test_json_logs_one_access_line_per_request_and_no_secrets(
    sidecar_config: dict[str, Any], upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    token = "sk-very-secret-token-2f8a"
    query = "what is the weather like in Zanzibar on my birthday"
    config = {**sidecar_config, "logging": {"level": "DEBUG", "format": "json"}}
    async with SidecarProcess(config) as proc:
        auth = {"Authorization": f"Bearer {token}"}
        sent: dict[str, int] = {}
        session_ids: dict[str, str | None] = {}
        for i, (method, path, body, status) in enumerate(
            [
                ("POST", "/api/tasks", {"query": query}, 200),
                ("POST", "/api/tasks", {"query": query, "session_id": "bad id!"}, 400),
                ("GET", f"/echo/{token}", None, 200),
                ("GET", "/_sidecar/nothing-here", None, 404),
            ]
        ):
            request_id = f"log-test-{i}"
            headers = {**auth, "X-Request-ID": request_id, "X-Api-Key": token}
            async with http.request(method, proc.url + path, json=body, headers=headers) as resp:
                assert resp.status == status, await resp.text()
                session_ids[request_id] = resp.headers.get("X-Session-ID")
            sent[request_id] = status
        proc.terminate()
        assert await proc.wait() == 0
        text = proc.log_text()

    lines = [line for line in text.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "sidecar.access"]
    ours = [r for r in access if r.get("request_id") in sent]
    assert sorted(r["request_id"] for r in ours) == sorted(sent)
    for record in ours:
        assert record["status"] == sent[record["request_id"]]
        assert {
            "ts",
            "level",
            "request_id",
            "method",
            "route",
            "status",
            "duration_ms",
            "upstream_ms",
            "overhead_ms",
            "session_id",
            "degraded",
        } <= record.keys()
        assert record["duration_ms"] > 0
    first = next(r for r in ours if r["request_id"] == "log-test-0")
    assert first["route"] == "/api/tasks"
    assert session_ids["log-test-0"]
    assert first["session_id"] == session_ids["log-test-0"]
    assert first["duration_ms"] >= first["upstream_ms"] > 0
    assert first["overhead_ms"] > 0
    assert next(r for r in ours if r["request_id"] == "log-test-2")["route"] == "passthrough"
    # Neither the credential nor the user's words are anywhere in the log (DEBUG included).
    assert token not in text
    assert "Zanzibar" not in text


async def test_a_request_too_malformed_to_route_is_answered_counted_and_logged(
    sidecar_config: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    """aiohttp's parser refuses it before any handler runs; the running process still answers
    it as the sidecar answers every error, counts it and writes its access line."""
    config = {**sidecar_config, "logging": {"format": "json"}}
    async with SidecarProcess(config) as proc:
        status, headers, body = await raw(proc.url, b"GET /x HTTP/1.1 trailing\r\nHost: x\r\n\r\n")
        assert status == 400
        assert json.loads(body)["error"]["code"] == "bad_http"
        samples = await scrape(http, proc.url)
        proc.terminate()
        assert await proc.wait() == 0
        text = proc.log_text()
    assert requests_counted(samples, route="passthrough", adapter="none", code="400") == 1
    access = [
        r
        for r in map(json.loads, filter(str.strip, text.splitlines()))
        if r["logger"] == "sidecar.access"
    ]
    assert [(r["request_id"], r["status"]) for r in access if r["status"] == 400] == [
        (headers["x-request-id"], 400)
    ]


async def test_text_logs_and_no_access_log(
    sidecar_config: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    config = {**sidecar_config, "logging": {"format": "text", "access_log": True}}
    async with SidecarProcess(config) as proc:
        async with http.get(proc.url + "/echo/t", headers={"X-Request-ID": "text-1"}) as resp:
            assert resp.status == 200
        proc.terminate()
        await proc.wait()
        text = proc.log_text()
    (line,) = [line for line in text.splitlines() if "request_id=text-1" in line]
    assert "GET passthrough 200" in line
    config = {**sidecar_config, "logging": {"access_log": False}}
    async with SidecarProcess(config) as proc:
        async with http.get(proc.url + "/echo/t", headers={"X-Request-ID": "quiet-1"}) as resp:
            assert resp.status == 200
        proc.terminate()
        await proc.wait()
        assert "quiet-1" not in proc.log_text()
        assert "sidecar.access" not in proc.log_text()


# --- admin listener -------------------------------------------------------------------------------


async def test_admin_listener_serves_metrics_and_admin_only_there(
    sidecar_config: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    admin_port = free_port()
    config = {
        **sidecar_config,
        "admin": {"token": ADMIN_TOKEN, "listen": {"host": "127.0.0.1", "port": admin_port}},
    }
    async with SidecarProcess(config) as proc:
        admin = f"http://127.0.0.1:{admin_port}"
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.post(
            proc.url + "/api/tasks", json={"query": "hi", "session_id": "adm-1"}
        ) as resp:
            assert resp.status == 200
            tenant_probe = resp.headers["X-Session-ID"]
        assert tenant_probe == "adm-1"
        # The client port: health only.
        for path in ("/_sidecar/healthz", "/_sidecar/readyz"):
            for base in (proc.url, admin):
                async with http.get(base + path) as resp:
                    assert resp.status == 200, (base, path)
        for path in ("/_sidecar/metrics", "/_sidecar/sessions/anonymous/adm-1"):
            async with http.get(proc.url + path, headers=auth) as resp:
                assert resp.status == 404, path
                assert (await resp.json())["error"]["code"] == "not_found"
        # The admin port: metrics (counting the client port's traffic) and the admin API.
        samples = await scrape(http, admin)
        assert requests_counted(samples, route="/api/tasks", adapter="tasks", code="200") == 1
        # The two refused on the client port, under one label (not the paths asked for).
        assert requests_counted(samples, route="/_sidecar", adapter="none", code="404") == 2
        async with http.get(admin + "/_sidecar/sessions/anonymous/adm-1", headers=auth) as resp:
            assert resp.status == 200
            assert (await resp.json())["session_id"] == "adm-1"
        # Nothing else is served there, and nothing is forwarded from it.
        async with http.get(admin + "/api/tasks/anything") as resp:
            assert resp.status == 404


# --- tracing ---------------------------------------------------------------------------------------


def test_tracing_off_needs_no_opentelemetry_and_does_nothing() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if the otel extra were not installed
        "from sidecar.app import TRACER, create_app\n"
        "from sidecar.config import Config\n"
        "from sidecar import tracing\n"
        "app = create_app(Config())\n"
        "assert TRACER not in app\n"
        "# Every hook on the request path gets one shared do-nothing context manager.\n"
        "assert tracing.span('load') is tracing.span('commit')\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_tracing_without_the_extra_is_a_config_error(tmp_path: Any) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text("tracing: {enabled: true}\n")
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # as if the otel extra were not installed
        "from sidecar.cli import main\n"
        f"sys.exit(main(['serve', '-c', {str(path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "tracing.enabled" in result.stderr
    assert "session-sidecar[otel]" in result.stderr
