"""One live process per outbox consumer name: a lease in Redis, held while the writer runs.

A stable consumer name (``writer.consumer``, the pod name) lets a restarted sidecar resume its own
pending entries at once instead of waiting ``claim_idle_ms`` for another replica to claim them. The
price is that two live processes must never share a name: both would read one pending list and
acknowledge each other's entries. The lease (``<prefix>:consumer:<name>``, a random token with a
short TTL refreshed by its holder) makes that impossible: a process finding the name held waits
for the lease to lapse (a crashed predecessor's does within ``LEASE_TTL_MS``) and, if it is still
renewed after that, refuses to start.
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

    async def _holder(self) -> str | None:
        raw = await self.client.get(self.key)
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    async def renew(self) -> bool:
        """Extend the lease; False (and ``held`` False) when another process has it. Not one
        script: while we hold the lease nobody else can take it, so reading then extending is
        safe, and plain commands keep the request path's scripts apart from this."""
        holder = await self._holder()
        if holder is None:  # Redis lost it (a flush, a fresh node): take it again
            self.held = bool(await self.client.set(self.key, self.token, px=LEASE_TTL_MS, nx=True))
        elif holder == self.token:
            await self.client.pexpire(self.key, LEASE_TTL_MS)
            self.held = True
        else:
            self.held = False
        return self.held

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew the lease every ``RENEW_EVERY_S`` until ``stop`` is set; the moment the name is
        found taken, ``held`` turns False and the writer stops consuming under it."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RENEW_EVERY_S)
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
                if await self._holder() == self.token:
                    await self.client.delete(self.key)
            except REDIS_ERRORS as e:
                log.warning("writer: could not release consumer name %s: %s", self.name, e)
            self.held = False
