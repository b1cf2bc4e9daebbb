"""A throw-away Redis Cluster: N masters on loopback ports, joined and waited until healthy.

Each master is a ``TemporaryRedis`` started with ``--cluster-enabled yes`` in its own temporary
directory. A fresh cluster is joined the way ``redis-cli --cluster create`` does it, without its
one-second waits: every node gets a distinct config epoch and an even share of the 16384 slots
(``CLUSTER ADDSLOTSRANGE``), the first node meets the others (``CLUSTER MEET``), and ``start()``
returns once every node reports ``cluster_state:ok`` and knows all the others. Nodes keep
``nodes.conf`` in their directory, so a node stopped and started again rejoins by itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster

from .process import DevServiceError, Started, free_port
from .redis import TemporaryRedis

__all__ = ["CLUSTER_SLOTS", "TemporaryRedisCluster"]

CLUSTER_SLOTS = 16384


def _parse_info(raw: Any) -> dict[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


class TemporaryRedisCluster(Started):
    """``masters`` (default 3) Redis masters forming one cluster on 127.0.0.1, no replicas.

    ``nodes`` are the ``TemporaryRedis`` servers (stop, kill or pause one to fault a shard;
    ``ensure_running()`` brings them all back and waits until the cluster is healthy again). A
    node keeps its slots across a restart; it keeps its keys only with ``persistent=True``.
    """

    ready_within_s = 60.0  # start(), wait_ok() and ensure_running() give up after this

    def __init__(
        self,
        masters: int = 3,
        *,
        persistent: bool = False,
        node_timeout_ms: int = 2000,
        binary: str | None = None,
    ) -> None:
        if masters < 1:
            raise ValueError("a cluster needs at least one master")
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            # How long a node may be unreachable before the others call it failed.
            "--cluster-node-timeout", str(node_timeout_ms),
        )  # fmt: skip
        # Each node's bus port is chosen too: the default (port + 10000) may be taken or past 65535.
        self.bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            TemporaryRedis(
                persistent=persistent,
                binary=binary,
                extra_args=(*args, "--cluster-port", str(bus_port)),
            )
            for bus_port in self.bus_ports
        ]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port of the first node>/0``: any node serves as an entry point."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def client(self, socket_timeout: float = 5.0, **kwargs: Any) -> RedisCluster:
        """A redis-py asyncio ``RedisCluster`` that knows every node as a startup node."""
        startup = [ClusterNode("127.0.0.1", port) for port in self.ports]
        return RedisCluster(
            startup_nodes=startup,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            **kwargs,
        )

    async def cluster_info(self, node: TemporaryRedis) -> dict[str, str]:
        """One node's ``CLUSTER INFO`` as a dict of strings."""
        return _parse_info(await node.execute("CLUSTER", "INFO"))

    async def slots_per_node(self) -> dict[int, int]:
        """How many slots each node (by port) serves, as the first node sees it."""
        counts = dict.fromkeys(self.ports, 0)
        for first, last, master, *_replicas in await self.nodes[0].execute("CLUSTER", "SLOTS"):
            port = int(master[1])
            counts[port] = counts.get(port, 0) + int(last) - int(first) + 1
        return counts

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every node, join them when they are new, and wait until the cluster is ok."""
        await asyncio.gather(*(node.start() for node in self.nodes))
        if await self._is_new():
            await self._join()
        await self.wait_ok()

    async def _is_new(self) -> bool:
        infos = [await self.cluster_info(node) for node in self.nodes]
        return all(info.get("cluster_slots_assigned") == "0" for info in infos)

    async def _join(self) -> None:
        n = len(self.nodes)
        for i, node in enumerate(self.nodes):
            # Distinct epochs up front, as redis-cli does, so no epoch collision must be resolved.
            await node.execute("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            first, last = i * CLUSTER_SLOTS // n, (i + 1) * CLUSTER_SLOTS // n - 1
            await node.execute("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            await self.nodes[0].execute("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)

    async def wait_ok(self) -> None:
        """Wait until every node says ``cluster_state:ok``, knows all nodes and all slots."""
        want = {
            "cluster_state": "ok",
            "cluster_known_nodes": str(len(self.nodes)),
            "cluster_slots_assigned": str(CLUSTER_SLOTS),
        }
        deadline = time.monotonic() + self.ready_within_s
        delay = 0.01
        while True:
            seen: list[dict[str, str]] = []
            try:
                for node in self.nodes:
                    seen.append(await self.cluster_info(node))
            except (redis.exceptions.RedisError, OSError):
                pass
            if len(seen) == len(self.nodes) and all(
                all(info.get(k) == v for k, v in want.items()) for info in seen
            ):
                return
            if time.monotonic() > deadline:
                states = [info.get("cluster_state", "?") for info in seen]
                raise DevServiceError(
                    f"redis cluster on ports {self.ports} not ok within {self.ready_within_s:.0f}s: {states}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)

    async def ensure_running(self) -> None:
        """Bring back any stopped, killed or paused node and wait until the cluster is ok."""
        await asyncio.gather(*(node.ensure_running() for node in self.nodes))
        await self.wait_ok()

    async def flushall(self) -> None:
        """Remove every key on every master."""
        await asyncio.gather(*(node.flushall() for node in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes))

    async def close(self) -> None:
        """Stop every node and remove their directories."""
        await asyncio.gather(*(node.close() for node in self.nodes))
