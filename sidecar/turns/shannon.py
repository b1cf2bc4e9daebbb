"""Shannon's task stream on a tasks route with ``preset: shannon``.

Shannon's gateway streams a task's events at ``GET <parent>/stream/sse?workflow_id=<id>``, the
URL its ``POST <route>/stream`` answers with and its ``GET <route>/{id}/stream`` redirects to
(workflow id and task id are one id there). The stream is relayed as it comes; when it belongs to
a task the sidecar remembers, a copy is read and the turn is recorded as soon as the stream says
the task is complete — the gateway keeps the connection open for a while after that — and the
task is forgotten. Polls and streams of one task share the task's idempotency key, so however
many of them read it, in whatever order or at once, the turn is recorded once.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..adapters.shannon import ShannonStream
from ..errors import InvalidToken
from ..proxy import (
    client_response_headers,
    open_upstream,
    relay_response,
    upstream_request_headers,
    upstream_url,
)
from .capture import Answer, StreamCapture
from .tasks import PendingTask, TaskPolls


class ShannonStreams:
    """The handler of the gateway's stream endpoint beside one tasks route."""

    def __init__(self, polls: TaskPolls) -> None:
        self.polls = polls

    async def stream(self, request: web.Request) -> web.StreamResponse:
        polls = self.polls
        workflow_id = request.query.get("workflow_id", "")
        identity = await polls.identity.resolve(request.headers)
        if identity.invalid and polls.identity.rejects_invalid:
            raise InvalidToken("the bearer token failed verification")
        pending = (
            await polls.registry.lookup(identity.scope, polls.route, workflow_id)
            if 0 < len(workflow_id) <= 256 and not identity.invalid
            else None
        )
        url = upstream_url(polls.base, request)
        headers = upstream_request_headers(request, keep_identity=polls.identity.trusts_headers)
        if pending is None:
            async with open_upstream(polls.client, request.method, url, headers, None) as up:
                out = client_response_headers(up, ours=True)
                if identity.invalid:
                    out["X-Sidecar-Degraded"] = "identity"
                resp, _ = await relay_response(request, up, out)
                return resp

        # The stream is read for memory; an encoding the sidecar does not decode would hide it.
        headers.popall("Accept-Encoding", None)
        async with open_upstream(polls.client, request.method, url, headers, None) as up:
            out_headers = client_response_headers(up, ours=True)
            if up.content_type != "text/event-stream" or not 200 <= up.status < 300:
                resp, _ = await relay_response(request, up, out_headers)
                return resp
            out_headers["X-Session-ID"] = pending.session_id
            out_headers["X-Accel-Buffering"] = "no"
            task = pending
            reader = ShannonStream()
            capture = StreamCapture(reader, hide_usage=False)
            recording: list[asyncio.Task[None]] = []

            def completed() -> None:
                answer = capture.answer(up.status, True)
                if answer is not None:
                    coro = self._record(workflow_id, task, answer)
                    recording.append(polls.recorder.own(coro))

            capture.on_complete = completed
            resp, _ = await relay_response(
                request, up, out_headers, observe=capture.feed, transform=None
            )
            capture.end()
            if recording:
                await asyncio.shield(recording[0])
            elif reader.failed:
                # The task will never show a result: nothing to wait for.
                await polls.recorder.shielded(
                    polls.registry.forget(task.registry_tenant, polls.route, workflow_id)
                )
            # A stream that ended before the task completed leaves it remembered: a poll or
            # another stream may still read its result.
            return resp

    async def _record(self, task_id: str, pending: PendingTask, answer: Answer) -> None:
        polls = self.polls
        if await polls.recorder.record(pending.question, answer, []):
            await polls.registry.forget(pending.registry_tenant, polls.route, task_id)
