"""What a request costs in the sidecar, side by side with the least an aiohttp forwarder costs.

Three servers, each its own process, in front of one scripted upstream (a process too), the load
coming from a fourth (wrk when installed, else ``python -m bench.loadgen client``):

- ``forwarder``: the minimal aiohttp forwarder of ``bench.loadgen`` (uvloop when installed), the
  baseline;
- ``passthrough``: the sidecar on a path no route intercepts (``POST /bench/tasks``);
- ``turn``: the sidecar on ``POST /api/tasks`` with warm sessions (each already holds 50+
  messages, the in-process cache is current): load, extract entities, inject the 50-message
  window, forward, commit; the writer copies each turn to PostgreSQL meanwhile, and its work
  until the outbox is empty again counts towards the turn.

The modes take turns over several rounds at 16 connections, then one connection at a time. For
each run the CPU time of the server process and of redis-server is read from ``/proc/<pid>/stat``
before and after: CPU µs per request and the ratio to the forwarder's are the headline figures,
being far steadier on a shared machine than latencies. Also: Redis commands per warm turn
(``INFO commandstats``, and a ``MONITOR`` sample telling the request path's own commands from the
scripts' and the writer's), how fast the writer drains its outbox after PostgreSQL was frozen
(SIGSTOP) while turns kept coming, and the sidecar's resident memory after serving many new
sessions. With ``litellm`` on PATH its proxy gets a pass-through column too.

The benchmark starts its own Redis and PostgreSQL: it freezes PostgreSQL and reads redis-server's
CPU time. ``python -m bench.sidebyside`` prints the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench.loadgen import (
    LoadResult,
    cpu_seconds,
    rss_bytes,
    run_load,
    run_requests,
    wrk_available,
)
from bench.overhead import QUERIES
from bench.processes import forwarder_process, litellm_process, sidecar_with_pid
from bench.stack import Stores, sidecar_config, upstream_process
from sidecar.devservices import TemporaryPostgres, TemporaryRedis
from sidecar.store.keys import KeySpace

MODES = ("forwarder", "passthrough", "turn")
# Commands only background tasks send: the outbox writer's stream commands and its
# acknowledgements (a script sent whole, XACK in its text), its consumer-name lease (SET NX to
# take it, a script on the lease key to renew or release it about once a second: see
# ``_is_background``), the discovery of outbox streams (SCAN) and the clock sync with Redis's
# TIME (about once a second). Everything else outside a script is the
# request path's, which sends scripts only (tests/test_session_memory.py counts those itself).
WRITER_COMMANDS = frozenset(
    {
        "xreadgroup",
        "xack",
        "xdel",
        "xlen",
        "xautoclaim",
        "xinfo",
        "xgroup",
        "multi",
        "exec",
        "set",
        "get",
        "pexpire",
        "scan",
        "time",
    }
)
SCRIPT_COMMANDS = frozenset({"evalsha", "eval", "fcall"})


@dataclass(frozen=True, slots=True)
class Sizes:
    # Seven rounds: single rounds of the turn spread over about 2-3.5x the forwarder on the
    # shared 2-core machine these figures come from, and with three the median moved by about
    # 0.3x from run to run.
    rounds: int = 7
    seconds: float = 3.0
    sequential_seconds: float = 2.0
    connections: int = 16
    sessions: int = 64  # warm sessions the turn mode rotates over
    monitor_turns: int = 50
    drain_seconds: float = 5.0
    rss_sessions: int = 50_000


QUICK = Sizes(
    rounds=1,
    seconds=1.0,
    sequential_seconds=1.0,
    connections=4,
    sessions=8,
    monitor_turns=5,
    drain_seconds=1.0,
    rss_sessions=200,
)


@dataclass(slots=True)
class Run:
    """One mode's load run: the client's figures and the CPU its server and Redis spent."""

    load: LoadResult
    server_cpu_s: float
    redis_cpu_s: float
    at: float = 0.0  # the middle of the run (monotonic seconds), to pair it with the forwarder's

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.server_cpu_s / max(1, self.load.requests)

    @property
    def redis_us(self) -> float:
        return 1e6 * self.redis_cpu_s / max(1, self.load.requests)


@dataclass(slots=True)
class Mode:
    name: str
    loaded: list[Run] = field(default_factory=list)
    sequential: list[Run] = field(default_factory=list)

    @staticmethod
    def _median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    @property
    def cpu_us(self) -> float:
        return self._median([r.cpu_us for r in self.loaded])

    @property
    def redis_us(self) -> float:
        return self._median([r.redis_us for r in self.loaded])

    @property
    def rps(self) -> float:
        return self._median([r.load.rps for r in self.loaded])

    @property
    def p99_ms(self) -> float:
        return self._median([r.load.p99_ms for r in self.loaded])

    @property
    def seq_p50_ms(self) -> float:
        return self._median([r.load.p50_ms for r in self.sequential])

    @property
    def seq_p99_ms(self) -> float:
        return self._median([r.load.p99_ms for r in self.sequential])

    @property
    def errors(self) -> int:
        return sum(r.load.errors for r in (*self.loaded, *self.sequential))


@dataclass(slots=True)
class SideBySide:
    modes: dict[str, Mode]
    client: str
    connections: int
    commands_per_turn: dict[str, float]
    request_path_per_turn: dict[str, float]
    writer_per_turn: dict[str, float]
    drain_messages: int
    drain_seconds: float
    rss_start_mb: float
    rss_mb: float
    rss_sessions: int
    entries_per_batch: float = 0.0
    litellm: Mode | None = None

    def round_ratios(self, name: str) -> list[float]:
        """``name``'s CPU per request over the forwarder's at the same moment, run by run.

        The machine's speed drifts from one run to the next (the forwarder alone moves by a
        third between runs a few seconds apart), so each run is set against the forwarder's
        figure interpolated at its middle, between the forwarder's runs just before and just
        after it (the rounds end with one more forwarder run for that): drift over a round
        cancels instead of landing on whichever mode ran in the slow seconds."""
        mode = self.litellm if name == "litellm" else self.modes[name]
        assert mode is not None
        base = self.modes["forwarder"].loaded
        return [run.cpu_us / b for run in mode.loaded if (b := _baseline_at(base, run.at)) > 0]

    def ratio(self, name: str, figure: str = "cpu_us") -> float:
        """For CPU, the median of ``round_ratios``; for other figures, median over median."""
        if figure == "cpu_us":
            return statistics.median(self.round_ratios(name))
        mode = self.litellm if name == "litellm" else self.modes[name]
        assert mode is not None
        base = getattr(self.modes["forwarder"], figure)
        return float(getattr(mode, figure)) / base if base > 0 else float("nan")

    def medians_ratio(self, name: str) -> float:
        """CPU per request, median over the rounds, over the forwarder's: the unpaired figure."""
        return self.modes[name].cpu_us / self.modes["forwarder"].cpu_us

    @property
    def drain_rate(self) -> float:
        return self.drain_messages / self.drain_seconds if self.drain_seconds > 0 else 0.0

    @property
    def script_calls_per_turn(self) -> float:
        return sum(v for k, v in self.request_path_per_turn.items() if k in SCRIPT_COMMANDS)

    @property
    def other_request_path_per_turn(self) -> float:
        return sum(v for k, v in self.request_path_per_turn.items() if k not in SCRIPT_COMMANDS)

    def fields(self) -> dict[str, float]:
        fwd = self.modes["forwarder"]
        out = {
            "passthrough_cpu_x": self.ratio("passthrough"),
            "turn_cpu_x": self.ratio("turn"),
            "forwarder_cpu_us": fwd.cpu_us,
            "passthrough_cpu_us": self.modes["passthrough"].cpu_us,
            "turn_cpu_us": self.modes["turn"].cpu_us,
            "turn_redis_cpu_us": self.modes["turn"].redis_us,
            "turn_seq_p50_minus_forwarder_ms": self.modes["turn"].seq_p50_ms - fwd.seq_p50_ms,
            "passthrough_p99_x": self.ratio("passthrough", "p99_ms"),
            "script_calls_per_turn": self.script_calls_per_turn,
            "writer_drain_messages_per_s": self.drain_rate,
            "rss_mb": self.rss_mb,
        }
        if self.litellm is not None:
            out["litellm_cpu_x"] = self.ratio("litellm")
        return out

    def headline(self) -> dict[str, float]:
        """The figures the issue's targets are about, for the combined report."""
        fwd, turn = self.modes["forwarder"], self.modes["turn"]
        out = {
            "pass-through CPU / forwarder CPU (x)": self.ratio("passthrough"),
            "warm turn CPU / forwarder CPU (x)": self.ratio("turn"),
            "sequential turn p50 - forwarder p50 (ms)": turn.seq_p50_ms - fwd.seq_p50_ms,
            "pass-through p99 / forwarder p99, loaded (x)": self.ratio("passthrough", "p99_ms"),
            "Redis script calls per warm turn": self.script_calls_per_turn,
            "writer drain after a PostgreSQL freeze (messages/s)": self.drain_rate,
            f"sidecar RSS after {self.rss_sessions:,} sessions (MB)": self.rss_mb,
        }
        if self.litellm is not None:
            out["LiteLLM pass-through CPU / forwarder CPU (x)"] = self.ratio("litellm")
        return out

    def render(self) -> str:
        n = self.connections
        cols = [*(self.modes[m] for m in MODES), *([self.litellm] if self.litellm else [])]
        out = [
            f"side by side ({self.client}; {n} connections, modes taking turns; "
            "medians over rounds)",
            "",
            f"  {'mode':<12} {'CPU µs/req':>10} {'x fwd':>6} {'redis µs':>8} {'req/s':>7}"
            f" {'p99@' + str(n):>8} {'x fwd':>6} {'seq p50':>8} {'seq p99':>8} {'errors':>6}",
        ]
        for mode in cols:
            base = self.modes["forwarder"]
            cpu_x = 1.0 if mode is base else self.ratio(mode.name)
            out.append(
                f"  {mode.name:<12} {mode.cpu_us:10.0f} {cpu_x:6.2f}"
                f" {mode.redis_us:8.1f} {mode.rps:7.0f} {mode.p99_ms:8.2f}"
                f" {mode.p99_ms / base.p99_ms:6.2f} {mode.seq_p50_ms:8.2f}"
                f" {mode.seq_p99_ms:8.2f} {mode.errors:6d}"
            )
        if self.litellm is None:
            out.append("  (litellm not installed: no LiteLLM column)")
        turn, fwd = self.modes["turn"], self.modes["forwarder"]

        def per_turn(counts: dict[str, float]) -> str:
            return ", ".join(f"{k} {v:.2f}" for k, v in sorted(counts.items())) or "none"

        out += [
            "",
            "  latencies in ms; CPU µs per request of the server process (and of redis-server);",
            "  CPU x fwd: median over the rounds of each run against the forwarder at that moment",
            "  (interpolated between its runs before and after); unpaired, median over median: "
            + ", ".join(f"{m} {self.medians_ratio(m):.2f}" for m in MODES if m != "forwarder"),
            f"  sequential turn p50 - forwarder p50 = {turn.seq_p50_ms - fwd.seq_p50_ms:.2f} ms",
            "  per round, CPU x fwd: "
            + "; ".join(
                f"{m} " + ", ".join(f"{r:.2f}" for r in self.round_ratios(m))
                for m in MODES
                if m != "forwarder"
            ),
            "  per round, sequential p50 - forwarder's (ms): "
            + ", ".join(
                f"{t.load.p50_ms - f.load.p50_ms:.2f}"
                for t, f in zip(turn.sequential, fwd.sequential, strict=False)
            ),
            "",
            f"  Redis commands per warm turn (INFO commandstats, scripts' own calls included): "
            f"{sum(self.commands_per_turn.values()):.1f}",
            f"    {per_turn(self.commands_per_turn)}",
            f"  request path, outside scripts (MONITOR sample): {per_turn(self.request_path_per_turn)}",
            f"  writer: {per_turn(self.writer_per_turn)}; "
            f"{self.entries_per_batch:.1f} entries per batch under load",
            "",
            f"  writer drain after a PostgreSQL freeze: {self.drain_messages} messages in "
            f"{self.drain_seconds:.2f} s = {self.drain_rate:,.0f} messages/s",
            f"  sidecar RSS: {self.rss_start_mb:.0f} MB warm, {self.rss_mb:.0f} MB after "
            f"{self.rss_sessions:,} new sessions",
        ]
        return "\n".join(out)


# --- pieces ----------------------------------------------------------------------------------------


def _baseline_at(runs: list[Run], at: float) -> float:
    """The CPU per request of ``runs`` (in time order) at moment ``at``: interpolated between the
    runs on either side of it, else the nearest run's."""
    after = next((i for i, run in enumerate(runs) if run.at > at), len(runs))
    if after == 0 or after == len(runs):
        return runs[min(after, len(runs) - 1)].cpu_us if runs else float("nan")
    a, b = runs[after - 1], runs[after]
    weight = (at - a.at) / (b.at - a.at)
    return a.cpu_us + weight * (b.cpu_us - a.cpu_us)


def _bodies(sessions: int) -> list[bytes]:
    """Round robin over the warm sessions (no two connections on one session at once)."""
    return [
        orjson.dumps({"query": QUERIES[j // sessions % len(QUERIES)], "session_id": f"warm-{s}"})
        for j in range(sessions * len(QUERIES))
        for s in (j % sessions,)
    ]


async def _commandstats(client: aioredis.Redis) -> Counter[str]:
    info = await client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()})


async def _writer_counts(sidecar_url: str) -> tuple[float, float]:
    """Entries written and batches so far, from the sidecar's metrics."""
    async with aiohttp.ClientSession() as http, http.get(sidecar_url + "/_sidecar/metrics") as r:
        text = await r.text()
    found = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name in ("sidecar_writer_events_written_total", "sidecar_writer_batches_total")
    }
    return (
        found.get("sidecar_writer_events_written_total", 0.0),
        found.get("sidecar_writer_batches_total", 0.0),
    )


async def _outbox_length(client: aioredis.Redis, keys: KeySpace) -> int:
    return sum([int(await client.xlen(s)) for s in keys.outboxes()])


async def _until_drained(client: aioredis.Redis, keys: KeySpace, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await _outbox_length(client, keys) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the writer did not empty the outbox")
        await asyncio.sleep(0.005)


async def _measured(
    pid: int,
    redis_pid: int,
    load: Awaitable[LoadResult],
    settle: Callable[[], Awaitable[None]] | None = None,
) -> Run:
    start = time.monotonic()
    cpu0, rcpu0 = cpu_seconds(pid), cpu_seconds(redis_pid)
    result = await load
    if settle is not None:
        await settle()
    cpu, rcpu = cpu_seconds(pid) - cpu0, cpu_seconds(redis_pid) - rcpu0
    return Run(result, cpu, rcpu, at=(start + time.monotonic()) / 2)


async def _monitor_sample(
    client: aioredis.Redis,
    monitoring: aioredis.Redis,
    turn: Callable[[], Awaitable[LoadResult]],
    settle: Callable[[], Any],
) -> tuple[int, Counter[str], Counter[str]]:
    """Top-level commands (not those scripts run) while ``turn`` runs, split into the writer's
    and the request path's, as ``monitoring`` sees them. ``client`` is the benchmark's own (used
    one call at a time, so on one connection): its commands are left out."""
    request_path: Counter[str] = Counter()
    writer: Counter[str] = Counter()
    own_port = str((await client.client_info())["addr"]).rpartition(":")[2]

    async def listen(ready: asyncio.Event) -> None:
        async with monitoring.monitor() as monitor:
            ready.set()
            async for cmd in monitor.listen():
                if cmd.get("client_type") == "lua":
                    continue
                name = str(cmd.get("command", "")).split(" ", 1)[0].lower()
                if str(cmd.get("client_port")) == own_port:
                    continue
                background = _is_background(name, str(cmd.get("command", "")))
                (writer if background else request_path)[name] += 1

    ready = asyncio.Event()
    task = asyncio.create_task(listen(ready))
    await ready.wait()
    result = await turn()
    await settle()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return result.requests, request_path, writer


def _is_background(name: str, command: str) -> bool:
    """Whether a command seen by MONITOR is a background task's, not the request path's: the
    lease's scripts are told from the turn's by the lease key they name, the writer's
    acknowledgements by their text (the turn's scripts go by their SHA)."""
    return name in WRITER_COMMANDS or (
        name in SCRIPT_COMMANDS and (":consumer:" in command or "XACK" in command)
    )


@contextlib.asynccontextmanager
async def _stores() -> AsyncIterator[tuple[TemporaryRedis, TemporaryPostgres, Stores]]:
    async with TemporaryRedis(persistent=False) as redis, TemporaryPostgres() as postgres:
        yield redis, postgres, Stores(redis.url, await postgres.create_database("sidebyside"))


# --- the run -------------------------------------------------------------------------------------


async def measure(
    sizes: Sizes = Sizes(), *, prefer_wrk: bool = True, access_log: bool = True
) -> SideBySide:
    async with _stores() as (redis, postgres, stores), upstream_process() as upstream_url:
        redis_pid = redis.pid
        assert redis_pid is not None
        # A freeze must not outlast the writer's query timeout: the drain is measured, not a retry.
        config = sidecar_config(
            upstream_url,
            stores,
            postgres={"command_timeout_s": 120},
            logging={"level": "WARNING", "access_log": access_log},
        )
        async with (
            forwarder_process(upstream_url) as (fwd_url, fwd_pid),
            sidecar_with_pid(config) as (sc_url, sc_pid),
            contextlib.AsyncExitStack() as extra,
        ):
            keys = KeySpace(config["redis"]["key_prefix"], _partitions(config))
            client = redis.client()
            extra.push_async_callback(client.aclose)
            litellm = await extra.enter_async_context(litellm_process(upstream_url))
            bodies = _bodies(sizes.sessions)
            c = sizes.connections
            # Every warm session gets 25 turns (50 messages): its window is full from now on.
            await run_requests(
                sc_url + "/api/tasks",
                bodies[: sizes.sessions] * 25,
                connections=c,
                requests=sizes.sessions * 25,
            )
            await _until_drained(client, keys)
            servers = {
                "forwarder": (fwd_url + "/bench/tasks", fwd_pid),
                "passthrough": (sc_url + "/bench/tasks", sc_pid),
                "turn": (sc_url + "/api/tasks", sc_pid),
            }
            if litellm is not None:
                servers["litellm"] = (litellm[0] + "/bench/tasks", litellm[1])

            async def settle(name: str) -> None:
                if name == "turn":
                    await _until_drained(client, keys)

            def load(name: str, connections: int, seconds: float) -> Awaitable[LoadResult]:
                url = servers[name][0]
                return run_load(
                    url, bodies, connections=connections, seconds=seconds, prefer_wrk=prefer_wrk
                )

            for name in servers:  # warm-up: connections, code paths
                await load(name, c, 1.0)
                await settle(name)
            modes = {name: Mode(name) for name in servers}
            stats = Counter[str]()
            turns = 0
            written = await _writer_counts(sc_url)
            for _ in range(sizes.rounds):
                for name, (_, pid) in servers.items():
                    before = await _commandstats(client)
                    run = await _measured(
                        pid, redis_pid, load(name, c, sizes.seconds), lambda n=name: settle(n)
                    )
                    modes[name].loaded.append(run)
                    if name == "turn":
                        stats += await _commandstats(client) - before
                        turns += run.load.requests
            # The forwarder once more: every other mode's runs have one of its runs on each side.
            modes["forwarder"].loaded.append(
                await _measured(fwd_pid, redis_pid, load("forwarder", c, sizes.seconds))
            )
            written = tuple(
                a - b for a, b in zip(await _writer_counts(sc_url), written, strict=False)
            )
            for _ in range(sizes.rounds):
                for name, (_, pid) in servers.items():
                    run = await _measured(
                        pid,
                        redis_pid,
                        load(name, 1, sizes.sequential_seconds),
                        lambda n=name: settle(n),
                    )
                    modes[name].sequential.append(run)
            stats -= Counter({"info": stats["info"], "xlen": stats["xlen"]})  # the bench's own
            monitoring = redis.client()
            extra.push_async_callback(monitoring.aclose)
            sampled, request_path, writer = await _monitor_sample(
                client,
                monitoring,
                lambda: run_requests(
                    servers["turn"][0], bodies, connections=1, requests=sizes.monitor_turns
                ),
                lambda: settle("turn"),
            )
            drained, drain_s = await _drain(
                postgres, client, keys, lambda: load("turn", c, sizes.drain_seconds)
            )
            rss_start = rss_bytes(sc_pid)
            new_sessions = await _new_sessions(
                sc_url + "/api/tasks", sizes.rss_sessions, c, prefer_wrk
            )
            rss = rss_bytes(sc_pid)

    def per(counter: Counter[str], n: int) -> dict[str, float]:
        return {k: v / max(1, n) for k, v in counter.items() if v}

    return SideBySide(
        modes={m: modes[m] for m in MODES},
        client="wrk" if prefer_wrk and wrk_available() else "python -m bench.loadgen client",
        connections=sizes.connections,
        commands_per_turn=per(stats, turns),
        request_path_per_turn=per(request_path, sampled),
        writer_per_turn=per(writer, sampled),
        entries_per_batch=written[0] / max(1, written[1]),
        drain_messages=drained,
        drain_seconds=drain_s,
        rss_start_mb=rss_start / 2**20,
        rss_mb=rss / 2**20,
        rss_sessions=new_sessions,
        litellm=modes.get("litellm"),
    )


def _partitions(config: dict[str, Any]) -> int:
    from sidecar.config import Config

    return Config.from_mapping(config, env={}).redis.partitions


async def _drain(
    postgres: TemporaryPostgres,
    client: aioredis.Redis,
    keys: KeySpace,
    turns: Callable[[], Awaitable[LoadResult]],
) -> tuple[int, float]:
    """Freeze PostgreSQL, let turns pile up in the outbox, thaw it: messages and seconds until
    the outbox is empty."""
    await postgres.pause()
    try:
        await turns()
        entries = await _outbox_length(client, keys)
    finally:
        await postgres.resume()
    t0 = time.perf_counter()
    await _until_drained(client, keys, timeout_s=300)
    return 2 * entries, time.perf_counter() - t0


async def _new_sessions(url: str, wanted: int, connections: int, prefer_wrk: bool) -> int:
    """Send turns without a session id (each makes a new session) until ``wanted`` were made."""
    bodies = [orjson.dumps({"query": q}) for q in QUERIES]
    if not (prefer_wrk and wrk_available()):
        done = await run_requests(url, bodies, connections=connections, requests=wanted)
        return done.requests - done.errors
    made = 0
    while made < wanted:
        done = await run_load(url, bodies, connections=connections, seconds=2.0)
        made += done.requests - done.errors
    return made


def main(argv: list[str] | None = None) -> SideBySide:
    parser = argparse.ArgumentParser(prog="python -m bench.sidebyside", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument("--rss-sessions", type=int, help="new sessions before RSS is read")
    parser.add_argument(
        "--no-access-log", action="store_true", help="the sidecar without its access log"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.rss_sessions is not None:
        sizes = Sizes(**{**_asdict(sizes), "rss_sessions": args.rss_sessions})
    report = asyncio.run(
        measure(sizes, prefer_wrk=not args.python_client, access_log=not args.no_access_log)
    )
    print(report.render())
    sys.stdout.flush()
    return report


def _asdict(sizes: Sizes) -> dict[str, Any]:
    return {f: getattr(sizes, f) for f in Sizes.__dataclass_fields__}


if __name__ == "__main__":
    main()
