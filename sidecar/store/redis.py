"""The short-term store: sessions in Redis, loaded and committed in one round trip each."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..config import RedisConfig
from ..errors import SessionAbsent, StoreUnavailable
from ..session.model import Message, SessionKey, SessionSnapshot, Turn
from .breaker import CircuitBreaker
from .client import RedisClient
from .clock import RedisClock
from .keys import KeySpace, UserKeys
from .lane import Alone, Meanwhile, ScriptLane
from .replies import Committed, Lookup, as_str, committed_reply
from .replies import pairs as _pairs
from .replies import profile_reply as _profile_reply

log = logging.getLogger(__name__)

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
# Longer than any request or remembered task can take to come back with its answer.
TOMBSTONE_TTL_MS = 2 * 24 * 3600 * 1000
# How long a commit remembers its turn id, so that a commit resent on a fresh connection (the
# reply was lost with the old one) is recorded once. Far longer than one retry takes.
TURN_ONCE_TTL_MS = 60 * 1000


def _epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _script(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


class RedisSessionStore:
    """Sessions in Redis. Every public call is one round trip (one script or one pipeline)."""

    def __init__(
        self, client: RedisClient, cfg: RedisConfig, breaker: CircuitBreaker, alone: Alone = None
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.keys = KeySpace(cfg.key_prefix, cfg.partitions)
        self.breaker = breaker
        self.ttl_ms = cfg.session_ttl_s * 1000
        self.clock = RedisClock()
        # Called when Redis has lost its scripts: it restarted or failed over, and may hold
        # copies that went stale meanwhile (set by the session service).
        self.on_restart: Callable[[], Awaitable[None]] | None = None
        # Script calls skip the client's pool on a single node; a cluster client routes each
        # call to its slot's master itself. (``alone``: see ``store.pipe``.)
        single = isinstance(client, aioredis.Redis)
        bound, connect = cfg.socket_timeout_s, cfg.connect_timeout_s
        self._lane: ScriptLane | None = None
        if isinstance(client, aioredis.Redis):
            self._lane = ScriptLane(client, bound, connect, alone=alone)
        # Other calls are bounded as a whole: room for a connect and the exchange (a cluster
        # client keeps its socket timeouts, see store.client: room for one to fire first).
        self._bound_s = bound + connect if single else 2 * bound + connect
        self._load = client.register_script(_script("load.lua"))
        self._commit = client.register_script(_script("commit.lua"))
        self._seed = client.register_script(_script("seed.lua"))
        self.seed_profile_script = client.register_script(_script("profile_seed.lua"))
        self._drop = client.register_script(_script("drop.lua"))
        self._erase = client.register_script(_script("erase.lua"))
        self._scripts = (
            self._load,
            self._commit,
            self._seed,
            self.seed_profile_script,
            self._drop,
            self._erase,
        )

    async def prepare(self) -> None:
        """Load the scripts so the first requests do not pay for it (NOSCRIPT is still handled)."""
        for script in self._scripts:
            script.sha = as_str(
                await self._call(self.client.script_load(script.script), probe=True)
            )
        await self.sync_clock()

    async def sync_clock(self) -> None:
        """Measure the offset of Redis's clock (``TIME``) to this process's."""
        sent = time.time() * 1000
        reply = await self._call(self.client.time(), probe=True)
        if isinstance(reply, dict):  # a cluster client may answer per node
            reply = next(iter(reply.values()))
        seconds, micros = reply
        self.clock.observe(seconds * 1000 + micros / 1000, sent, time.time() * 1000)

    async def _eval(
        self,
        script: Any,
        keys: list[str],
        args: list[Any],
        *,
        probe: bool = False,
        meanwhile: Meanwhile = None,
    ) -> Any:
        """Run a loaded script through the breaker and the call bound. NOSCRIPT means Redis
        lost its script cache (a restart or a failover): copies it kept may be stale, so
        ``on_restart`` runs before anything else, outside the call's bound (reconciling takes
        what it takes, bounded by ``session.restore_timeout_s``), and the script is sent again
        as a probe: Redis has just answered (not ``meanwhile``: ``ScriptLane.evalsha``)."""
        try:
            call = self._evalsha(script.sha, keys, args, meanwhile)
            return await self._call(call, probe=probe, own=True)
        except NoScriptError:
            log.info("Redis lost its scripts (restarted or failed over); reconciling")
            for s in self._scripts:
                s.sha = as_str(await self._call(self.client.script_load(s.script), probe=True))
            if self.on_restart is not None:
                await self.on_restart()
            return await self._call(self._evalsha(script.sha, keys, args), probe=True, own=True)

    def _evalsha(
        self, sha: str, keys: list[str], args: list[Any], meanwhile: Meanwhile = None
    ) -> Awaitable[Any]:
        # The lane's coroutine itself, not one wrapping it: a frame fewer on every resume.
        if self._lane is not None:
            return self._lane.evalsha(sha, keys, args, meanwhile)
        return self.client.evalsha(sha, len(keys), *keys, *args)

    async def aclose(self) -> None:
        """Close the store's own connections (the client is closed by its owner)."""
        if self._lane is not None:
            await self._lane.aclose()

    async def _call(
        self, coro: Any, *, probe: bool = False, timeout_s: float | None = None, own: bool = False
    ) -> Any:
        """The one way to Redis: skipped while the breaker is open (``probe``: asked anyway),
        bounded (``timeout_s``: a longer bound; ``own``: a script call the lane bounds itself),
        and every failure raised as ``StoreUnavailable``."""
        if not probe and not self.breaker.allow():
            coro.close()
            raise StoreUnavailable("redis circuit open")
        try:
            if own and self._lane is not None:
                result = await coro  # the lane bounds it (a timeout context costs ~4 us)
            else:
                async with asyncio.timeout(timeout_s or self._bound_s):
                    result = await coro
        except NoScriptError:
            self.breaker.release()  # Redis answered; the caller reloads the scripts
            raise
        except (
            RedisConnectionError,
            RedisTimeoutError,
            RedisClusterException,
            OSError,
            TimeoutError,
        ) as e:
            # RedisClusterException: no node reachable to learn the topology from, or a slot no
            # master serves (SlotNotCoveredError): as absent as an unreachable single node.
            if timeout_s is not None and isinstance(e, TimeoutError):
                # A long walk over many keys (the admin API) that ran out of time says nothing
                # about Redis's health: the requests' breaker is left as it was.
                self.breaker.release()
            else:
                self.breaker.failure(timed_out=isinstance(e, (RedisTimeoutError, TimeoutError)))
            raise StoreUnavailable(f"redis unavailable: {e}") from e
        except RedisError as e:
            # Redis answered but refused (out of memory, read-only replica after a failover,
            # MISCONF, a cluster that is down or still redirecting after the client's retries:
            # ClusterDownError, MOVED/ASK, TRYAGAIN): as unusable for this call as an absent
            # Redis, but it answers fast, so the breaker is left as it was.
            self.breaker.release()
            if "MOVED" in str(e) and not isinstance(self.client, RedisCluster):
                log.error(
                    "Redis answered MOVED: redis.url names a Redis Cluster node; set"
                    " redis.cluster: true (a single-node client cannot serve a cluster)"
                )
            raise StoreUnavailable(f"redis refused: {e}") from e
        except BaseException:
            self.breaker.release()
            raise
        was_open = self.breaker.success()
        if was_open:
            for callback in self.breaker.on_close:
                callback()
        return result

    async def load(
        self,
        key: SessionKey,
        known_version: str,
        window: int,
        *,
        owner: tuple[str, str] | None = None,
        known_profile: str = "",
        meanwhile: Meanwhile = None,
    ) -> Lookup:
        """The session (only its version when ``known_version`` is current) and, with an
        ``owner`` (tenant, user), that user's profile, in one round trip (``meanwhile``: see
        ``ScriptLane.evalsha``)."""
        k = self.keys.session(key)
        keys = [k.meta, k.messages, k.context]
        args: list[Any] = [known_version, window, self.ttl_ms]
        if owner is not None:
            keys.append(self.keys.user(*owner).profile)
            args.append(known_profile)
        res = await self._eval(self._load, keys, args, meanwhile=meanwhile)
        kind = int(res[0])
        if kind == 0:
            return Lookup("absent")
        version = as_str(res[1])
        if kind == 1:
            return Lookup("current", version=version, profile=_profile_reply(res[2]))
        meta = _pairs(res[2])
        snapshot = SessionSnapshot(
            key=key,
            version=version,
            window=tuple(Message.decode(raw) for raw in res[3]),
            context={k_: orjson.loads(v) for k_, v in _pairs(res[4]).items()},
            tokens_used=int(meta.get("tokens_used", 0)),
            message_count=int(meta.get("message_count", 0)),
            last_seq=int(meta.get("seq", 0)),
            created_at=as_str(meta.get("created_at", b"")),
            updated_at=as_str(meta.get("updated_at", b"")),
        )
        return Lookup("fresh", snapshot, version, _profile_reply(res[5]))

    async def seed(
        self,
        key: SessionKey,
        *,
        last_seq: int | None,
        tokens_used: int,
        message_count: int,
        created_at: str,
        updated_at: str,
        context: dict[str, Any],
        messages: list[Message],
        announce: bool,
    ) -> bool:
        """Create (``announce``: also tell the writer) or restore a session if still absent.
        ``last_seq`` None: not known (PostgreSQL could not be read); numbering then starts from
        Redis's clock, above any seq the session may already have."""
        k = self.keys.session(key)
        payload = orjson.dumps(
            {
                "tenant": key.tenant,
                "session_id": key.session_id,
                "at": created_at,
                "context": context,
            }
        )
        args: list[Any] = [
            self.ttl_ms,
            secrets.token_hex(6),
            "clock" if last_seq is None else last_seq,
            tokens_used,
            message_count,
            created_at,
            updated_at,
            "1" if announce else "0",
            payload,
            len(context),
        ]
        for field_, value in context.items():
            args += [field_, orjson.dumps(value)]
        args += [m.encode() for m in messages]
        res = await self._eval(self._seed, [k.meta, k.messages, k.context, k.outbox, k.floor], args)
        return bool(int(res))

    async def commit(self, turn: Turn, max_stored: int, meanwhile: Meanwhile = None) -> Committed:
        """Record ``turn`` (``meanwhile``: see ``load``)."""
        k = self.keys.session(turn.key)
        user, assistant = turn.user.encode_without_seq(), turn.assistant.encode_without_seq()
        # Without the client's Idempotency-Key, the turn's own id guards against a resend.
        once = turn.idempotency_key or f"turn:{turn.turn_id}"
        args: list[Any] = [
            self.ttl_ms,
            max_stored,
            turn.assistant.timestamp,
            user,
            assistant,
            turn.usage.total_tokens,
            turn.usage.model,
            "1",
            IDEMPOTENCY_TTL_MS if turn.idempotency_key else min(TURN_ONCE_TTL_MS, self.ttl_ms),
            turn.outbox_payload((user, assistant)),
            # When the turn was asked, on Redis's clock, like the deletion tombstones.
            self.clock.to_redis_ms(_epoch_ms(turn.user.timestamp)),
            len(turn.profile_patch) if turn.profile_owner else 0,
        ]
        keys = [k.meta, k.messages, k.context, k.outbox, k.idempotency(once), k.tombstone]
        if turn.profile_owner is not None:
            u: UserKeys = self.keys.user(*turn.profile_owner)
            keys += [u.profile, u.tombstone]
            for fact, value in turn.profile_patch.items():
                args += [fact, orjson.dumps(value)]
        for field_, value in turn.context_patch.items():
            args += [field_, orjson.dumps(value)]
        res = await self._eval(self._commit, keys, args, meanwhile=meanwhile)
        kind = int(res[0])
        if kind == -1:
            raise SessionAbsent(turn.key.session_id)
        if kind == -2:
            log.info("turn of deleted session %s/%s dropped", turn.key.tenant, turn.key.session_id)
        return committed_reply(res)

    async def delete(self, key: SessionKey, *, probe: bool = False) -> None:
        """Drop a stale Redis copy (it is restored from PostgreSQL on the next load), keeping
        its highest seq so that the restored copy never numbers a turn below it. ``probe``: even
        while the breaker is half-open (reconciling, right after Redis answered again)."""
        k = self.keys.session(key)
        keys = [k.meta, k.messages, k.context, k.floor]
        await self._eval(self._drop, keys, [self.ttl_ms], probe=probe)

    async def erase(
        self, key: SessionKey, deleted_at_ms: int | None = None, *, probe: bool = False
    ) -> int:
        """Delete the session for good: its keys go, and a tombstone makes any turn asked before
        the deletion (a request still in flight, a task polled later) record nothing. Returns
        the deletion time, Redis's clock (``deleted_at_ms`` when given)."""
        k = self.keys.session(key)
        keys = [k.meta, k.messages, k.context, k.tombstone, k.floor]
        args = [TOMBSTONE_TTL_MS, "" if deleted_at_ms is None else deleted_at_ms]
        return int(await self._eval(self._erase, keys, args, probe=probe))

    async def guarded(self, coro: Any, *, timeout_s: float | None = None) -> Any:
        """One Redis call through the breaker, failures as ``StoreUnavailable`` (for the other
        stores sharing this client). ``timeout_s``: a longer bound, for a walk over many keys."""
        return await self._call(coro, timeout_s=timeout_s)

    async def ping(self) -> None:
        """Ask Redis directly, even with the breaker open: readiness must see it come back."""
        await self._call(self.client.ping(), probe=True)


__all__ = ["Committed", "RedisError", "RedisSessionStore"]
