"""Throw-away Redis, Redis Cluster and PostgreSQL servers for the test suite, benchmarks and demo.

Every server runs as a child process on 127.0.0.1 with a free port and keeps its data, socket and
log in a temporary directory. Lifecycle methods are coroutines, so a test that stops a server
never blocks the event loop serving the sidecar under test.

``TemporaryRedis(persistent=True, appendfsync="everysec", port=None)`` and
``TemporaryPostgres(port=None, settings=None)`` (both ``ChildServer``):

- ``await start()`` / ``await stop()`` (clean; data kept) / ``await kill()`` (SIGKILL of the
  server and every descendant, as a crash) / ``await restart()`` (same port, same data);
- ``await pause()`` (SIGSTOP of the whole process tree; returns once it is stopped: connections
  stay open, nothing answers) / ``await resume()``;
- ``await ensure_running()``: running and resumed, whatever happened before;
- ``await close()``, or ``async with``; ``is_running``, ``is_paused``, ``pid``, ``port``,
  ``log_text()``.
- Redis: ``url``, ``client()`` (redis-py asyncio, no retries), ``await execute(*args)``,
  ``await flushall()``.
- PostgreSQL: ``dsn``, ``dsn_for(db)``, ``await create_database(name)`` (returns its DSN),
  ``await drop_database(name)``.

``TemporaryRedisCluster(masters=3, persistent=False, node_timeout_ms=2000)``: ``masters`` Redis
masters with ``--cluster-enabled yes``, every slot assigned, ``start()`` returning once every
node says ``cluster_state:ok``. A node keeps its slots across a restart (``nodes.conf``), its
keys only when ``persistent=True``.

- ``url`` (first node; any node is an entry point), ``urls``, ``ports``, ``nodes`` (the
  ``TemporaryRedis`` servers, to stop, kill or pause one shard);
- ``client()``: a redis-py asyncio ``RedisCluster`` with every node as a startup node;
- ``await cluster_info(node)`` (dict), ``await slots_per_node()`` (port -> slot count);
- ``await wait_ok()``, ``await ensure_running()``, ``await flushall()``, ``await stop()``,
  ``await close()``, ``async with``.

From synchronous code, ``with in_background(async_context_manager) as value:`` keeps servers on a
private loop thread. pytest fixtures over these live in tests/conftest.py (``redis_server``,
``postgres_server``, ``redis_cluster``, ``redis_url``, ``redis_cluster_url``, ``pg_dsn``).
"""

from .blocking import in_background
from .cluster import TemporaryRedisCluster
from .postgres import TemporaryPostgres, find_postgres_bindir
from .process import ChildServer, DevServiceError, free_port
from .redis import TemporaryRedis

__all__ = [
    "ChildServer",
    "DevServiceError",
    "TemporaryPostgres",
    "TemporaryRedis",
    "TemporaryRedisCluster",
    "find_postgres_bindir",
    "free_port",
    "in_background",
]
