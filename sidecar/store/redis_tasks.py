"""Submitted asynchronous tasks in Redis: what the turn of a task needs until its result is read,
through the session store's one guarded call path."""

from __future__ import annotations

from .redis import RedisSessionStore


class RedisTaskStore:
    def __init__(self, sessions: RedisSessionStore) -> None:
        self.sessions = sessions

    async def put_task(
        self, tenant: str, route: str, task_id: str, data: bytes, ttl_s: int
    ) -> None:
        s = self.sessions
        await s.guarded(s.client.set(s.keys.task(tenant, route, task_id), data, ex=ttl_s))

    async def get_task(self, tenant: str, route: str, task_id: str) -> bytes | None:
        s = self.sessions
        raw: bytes | None = await s.guarded(s.client.get(s.keys.task(tenant, route, task_id)))
        return raw

    async def delete_task(self, tenant: str, route: str, task_id: str) -> None:
        s = self.sessions
        await s.guarded(s.client.delete(s.keys.task(tenant, route, task_id)))
