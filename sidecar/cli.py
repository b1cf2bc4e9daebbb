"""Command line: ``sidecar serve | migrate | check-config | prune | demo | --version``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Sequence

import yaml
from aiohttp import web

from . import __version__
from .app import LIFECYCLE, OBSERVER, create_admin_app, create_app
from .config import Config, ListenConfig, load_config, redact_url
from .errors import ConfigError, SidecarError, StoreError
from .identity import OLD_SCHEMES, credential_tenant, plain_sha256_tenant
from .lifecycle import drain
from .logs import flush_logs, setup_logging
from .middleware import Runner
from .store.postgres import run_migrations
from .store.rekey import move_tenants
from .store.retention import BATCH_SIZE, run_prune

log = logging.getLogger("sidecar")

# Once the drain has ended, requests still running get this long before they are cancelled.
FINAL_GRACE_S = 1.0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (the ``fast`` extra): the same asyncio API with its
    transports and scheduling in C, which is much of what a proxy spends its time on."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# Young collections run after this many net allocations (the default is 700): a turn allocates
# hundreds of short-lived objects, so the default collects every turn or two for little gain.
GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Once started: move what start-up built (modules, the gazetteer, the app: some 60,000
    objects that live as long as the process) out of the collector's sight, so full collections
    no longer walk them; a full collection over them paused the loop for tens of ms. Young
    collections are made rarer too (see ``GC_YOUNG_THRESHOLD``)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT, then drain: readiness turns 503 while the listener stays open
    until in-flight requests finish (bounded by ``shutdown.drain_timeout_s``); then the listener
    closes, the writer flushes, and parts close in reverse order. A second signal exits at once."""
    app = create_app(config)
    runner = _runner(app)
    await runner.setup()
    admin_runner: web.AppRunner | None = None
    try:
        site = web.TCPSite(runner, config.listen.host, config.listen.port, reuse_address=True)
        await site.start()
        log.info(
            "listening on http://%s:%d, forwarding to %s",
            config.listen.host,
            config.listen.port,
            redact_url(config.upstream.url),
        )
        if config.admin.listen is not None:
            admin_runner = await _serve_admin(app, config.admin.listen)
        settle_garbage_collector()
    except BaseException:
        if admin_runner is not None:
            await admin_runner.cleanup()
        await runner.cleanup()
        raise

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal: exiting without draining")
            sys.stderr.flush()
            import os

            os._exit(1)
        log.info("%s received: draining", signal.Signals(signum).name)
        app[LIFECYCLE].begin_shutdown(config.shutdown.drain_timeout_s)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await stop.wait()
        await drain(app[LIFECYCLE], config.shutdown.drain_timeout_s)
    finally:
        if admin_runner is not None:
            await admin_runner.cleanup()
        await runner.cleanup()
        log.info("stopped")


def _runner(app: web.Application) -> Runner:
    """An app of the sidecar's, served: signals left to ``serve``, the access log written by the
    app's observer, which also counts and logs what is too malformed to reach the app."""
    return Runner(
        app,
        on_unhandled=app[OBSERVER].unhandled,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=FINAL_GRACE_S,
    )


async def _serve_admin(app: web.Application, listen: ListenConfig) -> web.AppRunner:
    """The admin listener: metrics and the admin API on their own port (``admin.listen``)."""
    runner = _runner(create_admin_app(app))
    await runner.setup()
    try:
        await web.TCPSite(runner, listen.host, listen.port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("admin endpoints on http://%s:%d/_sidecar/", listen.host, listen.port)
    return runner


def config_warnings(config: Config) -> list[str]:
    """Settings that work but deserve a second look; printed by check-config and at start."""
    warnings = []
    if not config.identity.secret:
        warnings.append(
            "identity.secret is not set: credential tenants are keyed with the fixed, published"
            " default key, so anyone holding a database dump can confirm a guessed API key"
            " (set SIDECAR_IDENTITY_SECRET)"
        )
    return warnings


def _read_credentials(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _rekey(config: Config, credentials_path: str) -> None:
    """Move the rows of these credentials' plain-hash tenants to their keyed ones (a hash cannot
    be reversed, so the credentials themselves are needed); one line each."""
    secret = config.identity.secret
    pairs = [
        (plain_sha256_tenant(c), credential_tenant(c, secret))
        for c in _read_credentials(credentials_path)
    ]
    results = asyncio.run(
        move_tenants(config.postgres.dsn, config.postgres.connect_timeout_s, pairs)
    )
    for r in results:
        left = f", {len(r.left_behind)} left (ids taken)" if r.left_behind else ""
        print(f"re-keyed {r.old} -> {r.new}: {r.sessions} session(s){left}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {}
    for name, text in (
        ("serve", "run the proxy until SIGTERM/SIGINT"),
        ("migrate", "apply the PostgreSQL schema (idempotent)"),
        ("check-config", "validate the config and print it with secrets redacted"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("-c", "--config", help="YAML config file (default: $SIDECAR_CONFIG)")
        commands[name] = p
    commands["migrate"].add_argument(
        "--rekey-from",
        choices=OLD_SCHEMES,
        help="move rows stored under an older credential scheme to identity.secret's tenants",
    )
    commands["migrate"].add_argument(
        "--credentials",
        metavar="FILE",
        help="with --rekey-from: the credentials to re-key, one per line, as clients send them",
    )
    p = sub.add_parser("prune", help="delete rows older than postgres.retention_days, once")
    p.add_argument("-c", "--config", help="YAML config file (default: $SIDECAR_CONFIG)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help="rows per transaction (default %(default)s)",
    )
    sub.add_parser("demo", help="play the weather conversation through a throw-away setup")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo.run import main as demo_main

        return demo_main()

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1

    if args.command == "check-config":
        print(yaml.safe_dump(config.redacted(), sort_keys=False, allow_unicode=True), end="")
        for warning in config_warnings(config):
            print(f"warning: {warning}", file=sys.stderr)
        return 0
    setup_logging(config.logging.level, config.logging.format)
    if args.command == "prune":
        days = config.postgres.retention_days
        if days is None:
            print("postgres.retention_days is not set: everything is kept", file=sys.stderr)
            return 1
        try:
            pruned = asyncio.run(run_prune(config.postgres, days, max(args.batch_size, 1)))
        except StoreError as e:
            print(f"prune failed: {e}", file=sys.stderr)
            return 1
        print(f"pruned rows older than {days} days: {pruned}")
        return 0 if not pruned.skipped else 1
    if args.command == "migrate":
        if bool(args.rekey_from) != bool(args.credentials):
            print("migrate: --rekey-from and --credentials go together", file=sys.stderr)
            return 1
        try:
            applied = asyncio.run(
                run_migrations(config.postgres.dsn, config.postgres.connect_timeout_s)
            )
            print("applied: " + ", ".join(applied) if applied else "schema is up to date")
            if args.credentials:
                _rekey(config, args.credentials)
        except (StoreError, OSError) as e:
            print(f"migrate failed: {e}", file=sys.stderr)
            return 1
        return 0
    for warning in config_warnings(config):
        log.warning("%s", warning)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(config))
    except ConfigError as e:  # found only when parts are built (tracing without its extra)
        print(e, file=sys.stderr)
        return 1
    except (OSError, SidecarError) as e:
        print(f"cannot serve: {e}", file=sys.stderr)
        return 1
    finally:
        flush_logs()
    return 0
