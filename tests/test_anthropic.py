"""The ``anthropic`` adapter through the official ``anthropic`` SDK: memory injected with roles
alternating, ``system`` untouched, tool use passed through and not stored, streams relayed event
by event, answers and usage in PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from sidecar.adapters.anthropic import AnthropicAdapter
from sidecar.adapters.base import Injection
from sidecar.session.model import new_message
from tests.harness import answer_text
from tests.harness.anthropic import MESSAGES, FakeAnthropic
from tests.harness.waiting import pg_fetch, session_messages, session_usage

SYSTEM = "You are terse."
WEATHER_TOOL = {
    "name": "weather",
    "description": "The weather of a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
async def backend() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def sidecar_url(start_sidecar: Any, backend: FakeAnthropic) -> str:
    sidecar = await start_sidecar(upstream={"url": backend.url})
    return str(sidecar.url)


def sdk(url: str, session_id: str | None) -> anthropic.AsyncAnthropic:
    headers = {"X-Session-ID": session_id} if session_id else {}
    return anthropic.AsyncAnthropic(
        base_url=url, api_key="k", default_headers=headers, max_retries=0
    )


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def test_json_turns_share_memory_with_system_untouched(
    sidecar_url: str, backend: FakeAnthropic, pg_dsn: str
) -> None:
    sid = f"an-{uuid.uuid4().hex[:8]}"
    async with sdk(sidecar_url, sid) as client:
        first = await client.messages.create(
            model="claude-fake-1",
            max_tokens=256,
            system=SYSTEM,
            messages=[user("Weather in Paris?")],
        )
        second = await client.messages.create(
            model="claude-fake-1",
            max_tokens=256,
            system=SYSTEM,
            messages=[user("And in Rome?")],
        )
    a1, a2 = answer_text("Weather in Paris?"), answer_text("And in Rome?")
    assert first.content[0].type == "text"
    assert first.content[0].text == a1
    assert second.content[0].type == "text"
    assert second.content[0].text == a2

    sent = backend.bodies(MESSAGES)[1]
    assert sent["system"] == SYSTEM
    assert sent["messages"] == [
        user("Weather in Paris?"),
        {"role": "assistant", "content": a1},
        user("And in Rome?"),
    ]
    rows = await session_messages(pg_dsn, sid, 4)
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", "Weather in Paris?"),
        ("assistant", a1),
        ("user", "And in Rome?"),
        ("assistant", a2),
    ]
    usage = await session_usage(pg_dsn, sid, 2)
    reported = [a["usage"] for a in backend.answers]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in usage] == [
        (u["input_tokens"], u["output_tokens"]) for u in reported
    ]
    assert {r["model"] for r in usage} == {"claude-fake-1"}


async def test_roles_alternate_where_history_and_request_meet(
    sidecar_url: str, backend: FakeAnthropic, pg_dsn: str
) -> None:
    sid = f"an-{uuid.uuid4().hex[:8]}"
    async with sdk(sidecar_url, sid) as client:
        await client.messages.create(model="m", max_tokens=64, messages=[user("Weather in Paris?")])
        # A request that opens with an assistant message (a prefill the client keeps) would
        # put two assistant messages side by side; the fake refuses that, as the API does.
        reply = await client.messages.create(
            model="m",
            max_tokens=64,
            messages=[{"role": "assistant", "content": "Noted."}, user("And Rome?")],
        )
    assert reply.content[0].type == "text"
    sent = backend.bodies(MESSAGES)[1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    joined = sent[1]["content"]
    assert [b["text"] for b in joined] == [answer_text("Weather in Paris?"), "Noted."]
    await session_messages(pg_dsn, sid, 4)


async def test_stream_relayed_event_by_event_and_recorded(
    sidecar_url: str, backend: FakeAnthropic, pg_dsn: str
) -> None:
    sid = f"an-{uuid.uuid4().hex[:8]}"
    backend.hold_streams = True
    q = "Tell me about Paris"
    texts: list[str] = []
    async with (
        sdk(sidecar_url, sid) as client,
        client.messages.stream(model="claude-fake-1", max_tokens=128, messages=[user(q)]) as stream,
    ):
        async for event in stream:
            if event.type == "text":
                if not texts:
                    # The backend holds the rest until this first piece is seen here:
                    # it was relayed as it came, not gathered first.
                    backend.release()
                texts.append(event.text)
        final = await stream.get_final_message()
    assert len(texts) == 3
    assert "".join(texts) == answer_text(q)
    assert final.usage.output_tokens == backend.answers[0]["usage"]["output_tokens"]
    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"], r["partial"]) for r in rows] == [
        ("user", q, False),
        ("assistant", answer_text(q), False),
    ]
    usage = await session_usage(pg_dsn, sid, 1)
    assert (usage[0]["prompt_tokens"], usage[0]["completion_tokens"]) == (
        backend.answers[0]["usage"]["input_tokens"],
        backend.answers[0]["usage"]["output_tokens"],
    )

    # The next turn carries the streamed exchange.
    async with sdk(sidecar_url, sid) as client:
        await client.messages.create(model="m", max_tokens=64, messages=[user("More?")])
    assert backend.bodies(MESSAGES)[1]["messages"][:2] == [
        user(q),
        {"role": "assistant", "content": answer_text(q)},
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_use_passes_through_and_is_not_stored(
    sidecar_url: str, backend: FakeAnthropic, pg_dsn: str, stream: bool
) -> None:
    sid = f"an-{uuid.uuid4().hex[:8]}"
    q = "Weather in Paris?"
    async with sdk(sidecar_url, sid) as client:

        async def ask(messages: list[dict[str, Any]]) -> anthropic.types.Message:
            kwargs: dict[str, Any] = {
                "model": "m",
                "max_tokens": 64,
                "tools": [WEATHER_TOOL],
                "messages": messages,
            }
            if not stream:
                return await client.messages.create(**kwargs)
            async with client.messages.stream(**kwargs) as s:
                return await s.get_final_message()

        first = await ask([user(q)])
        assert first.stop_reason == "tool_use"
        tool = next(b for b in first.content if b.type == "tool_use")
        assert (tool.name, tool.input) == ("weather", {"city": "Paris"})
        final = await ask(
            [
                user(q),
                {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": tool.id, "content": "sunny"}
                    ],
                },
            ]
        )
    assert final.content[0].type == "text"
    assert final.content[0].text == answer_text(q)
    # The tool round trip went upstream untouched: nothing stored was injected into it.
    assert backend.bodies(MESSAGES)[1]["messages"][1]["content"][1]["type"] == "tool_use"
    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"]) for r in rows] == [("user", q), ("assistant", answer_text(q))]
    assert len(await pg_fetch(pg_dsn, "SELECT 1 FROM messages WHERE session_id = $1", sid)) == 2


async def test_new_session_named_in_the_response(sidecar_url: str, pg_dsn: str) -> None:
    async with sdk(sidecar_url, None) as client:
        raw = await client.messages.with_raw_response.create(
            model="m", max_tokens=16, messages=[user("Hello")]
        )
    sid = raw.headers["X-Session-ID"]
    assert sid
    await session_messages(pg_dsn, sid, 2)


async def test_session_named_by_metadata_user_id_when_configured(
    start_sidecar: Any, backend: FakeAnthropic, pg_dsn: str
) -> None:
    routes = [{"path": MESSAGES, "adapter": "anthropic", "session_from_user": True}]
    sidecar = await start_sidecar(upstream={"url": backend.url}, routes=routes)
    sid = f"user-{uuid.uuid4().hex[:8]}"
    async with sdk(sidecar.url, None) as client:
        for q in ("Weather in Paris?", "And in Rome?"):
            await client.messages.create(
                model="m", max_tokens=32, metadata={"user_id": sid}, messages=[user(q)]
            )
    assert backend.bodies(MESSAGES)[1]["messages"][0] == user("Weather in Paris?")
    await session_messages(pg_dsn, sid, 4)


def test_history_opens_with_the_user_and_holds_no_empty_text() -> None:
    adapter = AnthropicAdapter()
    incoming = adapter.parse(
        json.dumps({"model": "m", "max_tokens": 8, "messages": [user("Next?")]}).encode(), {}
    )
    stored = [
        new_message("assistant", "the end of a turn cut by the window", 1),
        new_message("user", "", 1),  # a question that was only an image
        new_message("assistant", "A cat.", 1),
        new_message("user", "And Rome?", 1),
        new_message("assistant", "Sunny.", 1),
    ]
    body = adapter.inject(incoming, Injection("s", stored, {}, None, "off"))
    assert body["messages"] == [
        {"role": "user", "content": "And Rome?"},
        {"role": "assistant", "content": "Sunny."},
        user("Next?"),
    ]
