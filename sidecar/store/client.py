"""Redis clients: one node or a Redis Cluster (``redis.cluster``, or detected from ``INFO cluster``).

The rest of the sidecar speaks to either the same way: every script and multi-key command touches
one hash slot (``store.keys``), and the writer reads each outbox stream on its own in cluster
mode. A dead pooled connection is replaced once (``connection_retry``), beyond that the circuit
breaker decides.

Each call on a single node is bounded as a whole by its caller (``RedisSessionStore._call``),
not per socket operation: redis-py runs every send under a socket timeout as a task of its own
(``asyncio.wait_for``) and every read under a timeout context, which cost about as much CPU as
the rest of the call. A cluster client keeps its socket timeouts: a timeout it sees itself is
what makes it mark a silent master failed and refresh the topology (a cancellation would not).
The writer's client, whose blocking reads are not on the request path, keeps its socket timeout.

A single node's connections pack commands with hiredis's C ``pack_command`` (``PackedInC``):
redis-py's own encoder runs per argument in Python, and the writer's commands are long (a read
names every outbox stream, an acknowledgement every entry of a batch).
"""

from __future__ import annotations

import logging
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from ..config import RedisConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)

RedisClient = aioredis.Redis | RedisCluster

# Everything a call may raise that means "Redis (or the cluster's topology) is not usable now".
# RedisClusterException (no slot covered, no node reachable to learn the topology from) is not
# a RedisError.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


class PackedInC:
    """Packs a command with hiredis: the same bytes as redis-py's encoder (str as UTF-8, int and
    float as ``repr``), in C. A multi-word command name (``"XINFO CONSUMERS"``) and anything
    hiredis refuses (bool, None: redis-py's ``DataError``) take redis-py's way."""

    def pack_command(self, *args: Any) -> list[Any]:
        name = args[0]
        if isinstance(name, str) and " " not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[Any] = super().pack_command(*args)  # type: ignore[misc]
        return packed


class PackedConnection(PackedInC, Connection):
    pass


class PackedSSLConnection(PackedInC, SSLConnection):
    pass


class PackedUnixConnection(PackedInC, UnixDomainSocketConnection):
    pass


_PACKED: dict[type[Any], type[Any]] = {
    Connection: PackedConnection,
    SSLConnection: PackedSSLConnection,
    UnixDomainSocketConnection: PackedUnixConnection,
}


def connection_retry() -> Retry:
    """Resend a call once, on a fresh connection, when its pooled connection turns out dead.

    After a Redis restart (or a failover, or an idle connection cut by a firewall) every pooled
    connection is dead, and without this each would fail one request and count towards the
    circuit breaker: right after a restart nearly every request was degraded. Only connection
    errors are retried, once, after a few milliseconds; a timeout is not (a hung Redis must cost
    a request one timeout, and the breaker decides what comes next). Every call is safe to send
    twice: loads only read, seeds write only an absent session, and a commit is recorded once
    per turn id.
    """
    return Retry(
        ExponentialWithJitterBackoff(base=0.005, cap=0.05),
        retries=1,
        supported_errors=(RedisConnectionError,),
    )


async def detect_cluster(cfg: RedisConfig) -> bool | None:
    """True when ``redis.url`` names a Redis Cluster node (``INFO cluster``: ``cluster_enabled:1``);
    None when the node cannot be asked (unreachable)."""
    probe = aioredis.Redis.from_url(
        cfg.url, socket_timeout=cfg.socket_timeout_s, socket_connect_timeout=cfg.connect_timeout_s
    )
    try:
        info = await probe.info("cluster")
    except REDIS_ERRORS as e:
        log.warning("could not ask %s whether it is a cluster node: %s", cfg.url, e)
        return None
    finally:
        await probe.aclose()
    return str(info.get("cluster_enabled", "0")) == "1"


async def resolve_cluster(cfg: RedisConfig) -> bool:
    """Whether to use a cluster client: ``redis.cluster`` when set, else what the node says.

    A cluster node is never used as a single node: with ``redis.cluster: false`` that is a
    configuration error. An unreachable node cannot say; it is then taken as a single node and
    the warning says to set ``redis.cluster`` explicitly.
    """
    detected = await detect_cluster(cfg)
    if cfg.cluster is False and detected:
        raise ConfigError(
            "config error: redis.cluster: false, but redis.url names a Redis Cluster node"
            " (INFO cluster says cluster_enabled:1); set it to true or leave it out"
        )
    if cfg.cluster is not None:
        return cfg.cluster
    if detected is None:
        log.warning(
            "redis.cluster not set and Redis unreachable: using a single-node client;"
            " set redis.cluster explicitly for a Redis Cluster"
        )
        return False
    if detected:
        log.info("redis.url names a Redis Cluster node: using a cluster client")
    return detected


def make_client(
    cfg: RedisConfig, *, cluster: bool, socket_timeout_s: float | None = None
) -> RedisClient:
    """A client for ``redis.url`` (a cluster client when ``cluster``). Without
    ``socket_timeout_s`` its calls must be bounded by the caller; the writer passes its own
    socket timeout (its blocking reads wait longer than a request's calls may)."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": cfg.connect_timeout_s,
        "retry": connection_retry(),
        "health_check_interval": 0,
    }
    if cluster:
        # The retry covers the cluster level too: on a connection error the topology is
        # refreshed and the call sent once more. MOVED and ASK are followed by the client.
        return RedisCluster.from_url(cfg.url, max_connections=256, **common)
    client = aioredis.Redis.from_url(cfg.url, max_connections=256, **common)
    pool = client.connection_pool
    # The class the URL's scheme chose (TCP, TLS, a Unix socket), packing in C.
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    return client
