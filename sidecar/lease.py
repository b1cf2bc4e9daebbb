"""One live process per outbox consumer name: a lease in Redis, held while the writer runs.

A stable consumer name (``writer.consumer``, the pod name) lets a restarted sidecar resume its own
pending entries at once instead of waiting ``claim_idle_ms`` for another replica to claim them. The
price is that two live processes must never share a name: both would read one pending list and
acknowledge each other's entries. The lease (``<prefix>:consumer:<name>``, a random token with a
short TTL refreshed by its holder) makes that impossible: a process finding the name held waits
for the lease to lapse (a crashed predecessor's does within ``LEASE_TTL_MS``) and, if it is still
renewed after that, refuses to start. Renewal and release compare the token and act in one script
(one key, so the same on a Redis Cluster): a lease that lapsed and was taken by another process
between a read and a write is never extended nor deleted by its former holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

from .errors import SidecarError
from .store.client import REDIS_ERRORS, RedisClient

log = logging.getLogger(__name__)

LEASE_TTL_MS = 5000
RENEW_EVERY_S = 1.0

# Extend the lease if it is still ours; take it again if Redis lost it (a flush, a fresh node).
# 1: held by us now, 0: held by another process.
RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
elseif not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# Delete the lease only if it is still ours.
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class ConsumerNameInUse(SidecarError):
    """Another live process writes under this process's consumer name."""


def consumer_name(configured: str) -> str:
    return configured or f"{socket.gethostname()}-{os.getpid()}"


class ConsumerLease:
    def __init__(self, client: RedisClient, prefix: str, name: str) -> None:
        self.client = client
        self.name = name
        self.key = f"{prefix}:consumer:{name}"
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self.held = False

    def _in_use(self) -> ConsumerNameInUse:
        return ConsumerNameInUse(
            f"writer.consumer {self.name!r} is in use by another live process (its lease "
            f"{self.key} keeps being renewed); give each replica its own name, e.g. the pod name"
        )

    async def acquire(self, wait_s: float = LEASE_TTL_MS / 1000 + 1.0) -> None:
        """Take the lease, waiting for a crashed holder's to lapse; ConsumerNameInUse when a
        live process keeps it. Redis errors pass through (the caller retries later)."""
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            if await self.client.set(self.key, self.token, px=LEASE_TTL_MS, nx=True):
                self.held = True
                if waited:
                    log.info("writer: consumer name %s free again; taken", self.name)
                return
            if time.monotonic() >= deadline:
                raise self._in_use()
            if not waited:
                log.info("writer: consumer name %s still leased; waiting for it", self.name)
                waited = True
            await asyncio.sleep(0.2)

    async def renew(self) -> bool:
        """Extend the lease (taking it again if Redis lost it); False (and ``held`` False) when
        another process has it."""
        self.held = bool(await self.client.eval(RENEW, 1, self.key, self.token, LEASE_TTL_MS))
        return self.held

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew the lease every ``RENEW_EVERY_S`` until ``stop`` is set; the moment the name is
        found taken, ``held`` turns False and the writer stops consuming under it."""
        while not stop.is_set():
            # asyncio.timeout, not wait_for: no task of its own every second.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENEW_EVERY_S):
                    await stop.wait()
            if stop.is_set():
                return
            if not self.held:
                continue
            try:
                if not await self.renew():
                    log.error(
                        "writer: consumer name %s was taken by another process; not consuming",
                        self.name,
                    )
            except REDIS_ERRORS as e:
                log.debug("writer: lease renewal failed: %s", e)

    async def release(self) -> None:
        """Give the name back (a clean shutdown), so a successor need not wait."""
        if self.held:
            try:
                await self.client.eval(RELEASE, 1, self.key, self.token)
            except REDIS_ERRORS as e:
                log.warning("writer: could not release consumer name %s: %s", self.name, e)
            self.held = False
