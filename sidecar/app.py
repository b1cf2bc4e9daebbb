"""``create_app(config)``: the aiohttp application wired from its parts (typed app keys), and
their lifecycle in dependency order (cleanup contexts). Wiring only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from .adapters.anthropic import AnthropicAdapter
from .adapters.base import Adapter
from .adapters.openai import OpenAIAdapter
from .adapters.responses import ResponsesAdapter
from .adapters.shannon import sse_path
from .adapters.tasks import TasksAdapter
from .admin import AdminSessions
from .config import Config, RouteConfig
from .context import Extractor, HttpExtractor, RulesExtractor, load_gazetteer
from .errors import NotFound, StoreError
from .health import Health
from .identity import IdentityResolver
from .journal import Journal
from .lease import ConsumerLease, consumer_name
from .lifecycle import Lifecycle
from .metrics import Metrics
from .observe import SIDECAR_PREFIX, Observer
from .proxy import Forwarder, make_client_session
from .session.manager import SessionService
from .store.breaker import CircuitBreaker
from .store.client import REDIS_ERRORS, RedisClient, make_client, resolve_cluster
from .store.postgres import PostgresSessionStore
from .store.redis import RedisSessionStore
from .store.retention import Pruner
from .tracing import Tracer
from .turns import TurnRecorder, TurnRoute
from .turns.shannon import ShannonStreams
from .upstream import UpstreamClient
from .wire import ServerLog
from .writer import OutboxWriter

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
HTTP = web.AppKey("http", UpstreamClient)
EXTRACTOR_HTTP = web.AppKey("extractor_http", aiohttp.ClientSession)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
WRITER_REDIS: web.AppKey[RedisClient] = web.AppKey("writer_redis")
REDIS_STORE = web.AppKey("redis_store", RedisSessionStore)
PG_STORE = web.AppKey("pg_store", PostgresSessionStore)
SESSIONS = web.AppKey("sessions", SessionService)
WRITER = web.AppKey("writer", OutboxWriter)
EXTRACTOR = web.AppKey("extractor", RulesExtractor)
RECORDER = web.AppKey("recorder", TurnRecorder)
OBSERVER = web.AppKey("observer", Observer)
TRACER = web.AppKey("tracer", Tracer)  # present only with tracing.enabled
HEALTH = web.AppKey("health", Health)
IDENTITY = web.AppKey("identity", IdentityResolver)


def _adapter(route: RouteConfig) -> Adapter:
    if route.adapter == "openai":
        return OpenAIAdapter(session_from_user=route.session_from_user)
    if route.adapter == "anthropic":
        return AnthropicAdapter(session_from_user=route.session_from_user)
    if route.adapter == "responses":
        return ResponsesAdapter()
    return TasksAdapter(route.answer_paths, history_in=route.history_in, preset=route.preset)


def create_app(config: Config, *, span_exporter: Any = None) -> web.Application:
    """The application; ``span_exporter`` replaces the configured one (tests read spans so)."""
    metrics = Metrics()
    tracer = Tracer(config.tracing, span_exporter) if config.tracing.enabled else None
    lifecycle = Lifecycle()
    observer = Observer(
        metrics,
        [(r.path, r.adapter) for r in config.routes],
        access_log=config.logging.access_log,
        tracer=tracer,
        aliases={sse_path(r.path): r.path for r in config.routes if r.preset == "shannon"},
        lifecycle=lifecycle,
    )
    app = web.Application(
        # One middleware: the observer answers errors as JSON, and counts each as answered.
        middlewares=[observer.middleware],
        client_max_size=config.session.max_body_bytes,
        # Pass-through bodies must stay byte-identical; intercepted routes decode explicitly.
        # The server's own faults (malformed HTTP, disconnects) are one WARNING line each.
        handler_args={"auto_decompress": False, "logger": ServerLog()},
    )
    app[CONFIG] = config
    app[METRICS] = metrics
    app[OBSERVER] = observer
    if tracer is not None:
        app[TRACER] = tracer
    app.on_response_prepare.append(observer.on_response_prepare)
    app[LIFECYCLE] = lifecycle
    # Torn down in reverse: commits in flight finish first, then the writer flushes, then the
    # stores close, and last the spans of all that are exported.
    app.cleanup_ctx.extend(
        [_tracing, _identity, _http_client, _redis, _postgres, _services, _recorder]
    )
    app.on_startup.append(_routes)
    return app


async def _tracing(app: web.Application) -> AsyncIterator[None]:
    yield
    if TRACER in app:
        # Flushes buffered spans to the exporter: network I/O, kept off the event loop.
        await asyncio.to_thread(app[TRACER].shutdown)


async def _identity(app: web.Application) -> AsyncIterator[None]:
    # First: a JWT key file that cannot be read stops the start before anything else opens.
    app[IDENTITY] = IdentityResolver(app[CONFIG].identity)
    yield
    await app[IDENTITY].close()


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    up = app[CONFIG].upstream
    app[HTTP] = make_client_session(up.connect_timeout_s, up.read_timeout_s, up.pool_size)
    # The extraction service keeps aiohttp's client: a few JSON calls, each with its own bound.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as app[EXTRACTOR_HTTP]:
        yield
    await app[HTTP].close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG].redis
    cluster = await resolve_cluster(cfg)
    # A single node's calls are bounded by the store alone (see store.client); a cluster
    # client keeps socket timeouts, which is how it notices a failed master.
    client = make_client(
        cfg, cluster=cluster, socket_timeout_s=cfg.socket_timeout_s if cluster else None
    )
    app[REDIS] = client
    # The writer blocks on XREADGROUP; its own client keeps that off the request path's pool.
    app[WRITER_REDIS] = make_client(
        cfg, cluster=cluster, socket_timeout_s=app[CONFIG].writer.block_ms / 1000 + 5.0
    )
    breaker = CircuitBreaker(cfg.breaker_failures, cfg.breaker_reset_s)
    lifecycle = app[LIFECYCLE]  # one request at a time: its script calls go out at once
    store = RedisSessionStore(client, cfg, breaker, alone=lambda: lifecycle.in_flight <= 1)
    app[REDIS_STORE] = store
    try:
        await store.prepare()
    except REDIS_ERRORS as e:
        log.warning("Redis not reachable at start (%s); scripts load on first use", e)
    yield
    await app[WRITER_REDIS].aclose()
    await store.aclose()
    await client.aclose()


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG].postgres
    app[PG_STORE] = await PostgresSessionStore.connect(cfg)
    if cfg.migrate_on_start:
        # Best now, so the first requests find the tables; if PostgreSQL is down the writer
        # applies them when it comes back (requests are served meanwhile).
        try:
            await asyncio.wait_for(app[PG_STORE].migrate(), cfg.connect_timeout_s)
        except (StoreError, TimeoutError) as e:
            log.warning("migrations deferred, PostgreSQL unavailable: %s", e)
    pruner = Pruner(app[PG_STORE].pool, cfg.retention_days) if cfg.retention_days else None
    if pruner is not None:
        pruner.start()
    yield
    if pruner is not None:
        await pruner.close()
    await app[PG_STORE].close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    metrics = app[METRICS]
    lease = ConsumerLease(
        app[WRITER_REDIS], config.redis.key_prefix, consumer_name(config.writer.consumer)
    )
    try:
        # Before serving: a name another live process writes under is a reason not to start.
        await lease.acquire()
    except REDIS_ERRORS as e:
        log.warning("Redis not reachable at start (%s); the writer takes its name later", e)
    sessions = SessionService(
        app[REDIS_STORE],
        app[PG_STORE],
        config.session,
        metrics,
        Journal(config.writer.journal_path, config.writer.journal_max_bytes),
    )
    app[SESSIONS] = sessions
    sessions.start()
    writer = OutboxWriter(
        app[WRITER_REDIS],
        app[REDIS_STORE].keys,
        app[PG_STORE],
        config.writer,
        metrics,
        migrate=config.postgres.migrate_on_start,
        tracer=app.get(TRACER),
        lease=lease,
    )
    app[WRITER] = writer
    writer.start()
    yield
    # Requests have drained by now (the runner waits for them before cleanup).
    # One budget for the whole shutdown: the flush gets what the drain left of it.
    await writer.stop(app[LIFECYCLE].remaining_s(config.shutdown.drain_timeout_s))
    await sessions.close()


async def _recorder(app: web.Application) -> AsyncIterator[None]:
    recorder = TurnRecorder(app[SESSIONS], app[METRICS])
    app[RECORDER] = recorder
    yield
    # A commit may outlive its request (handed to a task of its own when the drain ran out); it
    # needs Redis, and the writer after it, so it ends before they close. Its Redis call ends on
    # its own within the socket timeout: it gets at least that, whatever the drain left.
    config = app[CONFIG]
    floor = max(1.0, config.redis.socket_timeout_s)
    await recorder.drain(app[LIFECYCLE].remaining_s(config.shutdown.drain_timeout_s, floor))


def build_extractor(app: web.Application) -> Extractor | None:
    config = app[CONFIG]
    if not config.context.extract_entities:
        return None
    rules = RulesExtractor(extra_topics=config.context.topics)
    # Loaded now (about 0.1 s, once per process) rather than by the first request.
    load_gazetteer()
    if config.context.extractor == "http" and config.context.http_extractor.url:
        return HttpExtractor(
            config.context.http_extractor.url,
            app[EXTRACTOR_HTTP],
            timeout_s=config.context.http_extractor.timeout_ms / 1000,
            fallback=rules,
        )
    return rules


async def _routes(app: web.Application) -> None:
    """Routes need the parts the cleanup contexts built, so they are added at startup."""
    config = app[CONFIG]
    app[HEALTH] = Health(
        app[LIFECYCLE],
        app[REDIS_STORE],
        app[PG_STORE],
        app[WRITER],
        app[METRICS],
        require=config.readiness.require,
        lag_warning=config.writer.ready_max_lag,
    )
    app[METRICS].gauge_callback(
        "sidecar_redis_circuit_open",
        "1 while Redis is being skipped after failures.",
        lambda: 1.0 if app[REDIS_STORE].breaker.is_open else 0.0,
    )
    app[METRICS].gauge_callback(
        "sidecar_writer_failing",
        "1 while the outbox writer's last attempt failed (it keeps retrying).",
        lambda: 1.0 if app[WRITER].health().failing else 0.0,
    )
    router = app.router
    # With admin.listen, metrics and the admin API are served by the admin app only.
    _sidecar_endpoints(app, router, admin=config.admin.listen is None)
    extractor = build_extractor(app)
    for route in config.routes:
        handler = TurnRoute(
            _adapter(route),
            config,
            app[HTTP],
            app[SESSIONS],
            extractor,
            app[RECORDER],
            app[METRICS],
            app[IDENTITY],
            route.path,
        )
        router.add_post(route.path, handler.handle)
        if handler.tasks is not None:
            # Reading an asynchronous task's result: passed through, its turn recorded once.
            router.add_get(
                route.path.rstrip("/") + "/{task_id}", handler.tasks.poll, allow_head=False
            )
            if route.preset == "shannon":
                # The gateway's streaming flows: a submission answered with a stream URL, and
                # the stream itself (``<route>/{id}/stream`` redirects to it, passed through).
                router.add_post(route.path.rstrip("/") + "/stream", handler.handle)
                streams = ShannonStreams(handler.tasks)
                router.add_get(sse_path(route.path), streams.stream, allow_head=False)
    router.add_route("*", "/_sidecar", _sidecar_not_found)
    # ``[\s\S]``, not ``.``: a path may hold a decoded newline (``/foo%0Abar``) and is still
    # the upstream's to answer.
    router.add_route("*", "/_sidecar/{tail:[\\s\\S]*}", _sidecar_not_found)
    forwarder = Forwarder(
        app[HTTP], config.upstream.url, keep_identity=config.identity.effective_mode == "headers"
    )
    router.add_route("*", "/{tail:[\\s\\S]*}", forwarder.handle)
    app[LIFECYCLE].started = True


def _sidecar_endpoints(app: web.Application, router: web.UrlDispatcher, *, admin: bool) -> None:
    """The health endpoints; with ``admin``, also metrics and the admin API."""
    health = app[HEALTH]
    router.add_get("/_sidecar/healthz", health.healthz)
    router.add_get("/_sidecar/readyz", health.readyz)
    if not admin:
        return
    router.add_get("/_sidecar/metrics", health.metrics_view)
    sessions = AdminSessions(app[CONFIG].admin.token, app[SESSIONS].admin)
    router.add_get("/_sidecar/sessions/{tenant}/{session_id}", sessions.get)
    router.add_delete("/_sidecar/sessions/{tenant}/{session_id}", sessions.delete)
    router.add_get("/_sidecar/users/{tenant}/{user_id}", sessions.get_user)
    router.add_delete("/_sidecar/users/{tenant}/{user_id}", sessions.delete_user)


def create_admin_app(app: web.Application) -> web.Application:
    """The application of the admin listener (``admin.listen``): everything under /_sidecar/,
    served with the parts of ``app``, which must have started."""
    config = app[CONFIG]
    observer = Observer(
        app[METRICS],
        [],
        access_log=config.logging.access_log,
        tracer=app.get(TRACER),
        fallback=SIDECAR_PREFIX,
    )
    admin_app = web.Application(
        middlewares=[observer.middleware],
        handler_args={"logger": ServerLog()},
    )
    admin_app[OBSERVER] = observer
    admin_app.on_response_prepare.append(observer.on_response_prepare)
    _sidecar_endpoints(app, admin_app.router, admin=True)
    admin_app.router.add_route("*", "/{tail:[\\s\\S]*}", _sidecar_not_found)
    return admin_app


async def _sidecar_not_found(request: web.Request) -> web.StreamResponse:
    raise NotFound(f"no such sidecar endpoint: {request.path}")
