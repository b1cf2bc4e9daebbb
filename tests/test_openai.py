"""The ``openai`` adapter through the official ``openai`` SDK: memory, streams, usage, re-sent history."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from sidecar.adapters.openai import missing_history
from sidecar.adapters.sse import UsageChunkFilter
from sidecar.session.model import new_message
from tests.harness import FakeUpstream, answer_text
from tests.harness.waiting import session_messages, session_usage, token_counts

CHAT = "/v1/chat/completions"
SYSTEM = {"role": "system", "content": "You are terse."}


def sdk(url: str, session_id: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=url + "/v1",
        api_key="k",
        default_headers={"X-Session-ID": session_id},
        max_retries=0,
    )


def sent_messages(upstream: FakeUpstream, i: int) -> list[dict[str, Any]]:
    body = upstream.requests_to(CHAT)[i].json
    assert isinstance(body, dict)
    return list(body["messages"])


async def test_sdk_json_calls_share_memory(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str
) -> None:
    sidecar = await start_sidecar()
    sid = f"oa-{uuid.uuid4().hex[:8]}"
    async with sdk(sidecar.url, sid) as client:
        first = await client.chat.completions.create(
            model="fake-1", messages=[SYSTEM, {"role": "user", "content": "Weather in Paris?"}]
        )
        second = await client.chat.completions.create(
            model="fake-1", messages=[SYSTEM, {"role": "user", "content": "And tomorrow?"}]
        )
    a1 = answer_text("Weather in Paris?")
    assert first.choices[0].message.content == a1
    assert second.choices[0].message.content == answer_text("And tomorrow?")
    assert first.usage is not None
    assert first.usage.total_tokens == upstream.reported_usage[0]["total_tokens"]

    # The stored exchange goes after the system message, before the request's own message.
    assert sent_messages(upstream, 1) == [
        SYSTEM,
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": a1},
        {"role": "user", "content": "And tomorrow?"},
    ]

    rows = await session_messages(pg_dsn, sid, 4)
    assert [(r["role"], r["content"], r["partial"]) for r in rows] == [
        ("user", "Weather in Paris?", False),
        ("assistant", a1, False),
        ("user", "And tomorrow?", False),
        ("assistant", answer_text("And tomorrow?"), False),
    ]
    usage = await session_usage(pg_dsn, sid, 2)
    assert [token_counts(r) for r in usage] == upstream.reported_usage
    assert {r["model"] for r in usage} == {"fake-1"}


async def test_sdk_streams_with_and_without_usage(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str
) -> None:
    sidecar = await start_sidecar()
    sid = f"oa-{uuid.uuid4().hex[:8]}"
    upstream.chat_chunks = 5
    async with sdk(sidecar.url, sid) as client:
        # The client asks for usage: it gets the usage chunk.
        stream = await client.chat.completions.create(
            model="fake-1",
            messages=[SYSTEM, {"role": "user", "content": "Weather in Paris?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == answer_text("Weather in Paris?")
        usage_chunks = [c for c in chunks if not c.choices]
        assert len(usage_chunks) == 1
        assert usage_chunks[0].usage is not None
        assert usage_chunks[0].usage.total_tokens == upstream.reported_usage[0]["total_tokens"]

        # The client does not ask: the upstream is asked anyway, the client sees no usage chunk.
        stream = await client.chat.completions.create(
            model="fake-1",
            messages=[SYSTEM, {"role": "user", "content": "And tomorrow?"}],
            stream=True,
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer_text("And tomorrow?")
    assert all(c.choices for c in chunks), "a usage-only chunk reached the client"
    assert all(c.usage is None for c in chunks)
    second = upstream.requests_to(CHAT)[1].json
    assert second["stream_options"] == {"include_usage": True}
    assert upstream.reported[1].usage_sent

    assert sent_messages(upstream, 1)[:3] == [
        SYSTEM,
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": answer_text("Weather in Paris?")},
    ]
    rows = await session_messages(pg_dsn, sid, 4)
    assert [r["content"] for r in rows] == [
        "Weather in Paris?",
        answer_text("Weather in Paris?"),
        "And tomorrow?",
        answer_text("And tomorrow?"),
    ]
    assert not any(r["partial"] for r in rows)
    usage = await session_usage(pg_dsn, sid, 2)
    assert [token_counts(r) for r in usage] == upstream.reported_usage


@pytest.mark.parametrize("shape", ["openai", "litellm"])
async def test_no_usage_field_reaches_a_client_that_did_not_ask(
    start_sidecar: Any,
    upstream: FakeUpstream,
    pg_dsn: str,
    http: aiohttp.ClientSession,
    shape: Any,
) -> None:
    sidecar = await start_sidecar()
    upstream.chat_usage_shape = shape
    sid = f"oa-{uuid.uuid4().hex[:8]}"
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi there"}]}
    async with http.post(sidecar.url + CHAT, json=body, headers={"X-Session-ID": sid}) as resp:
        assert resp.status == 200
        raw = await resp.read()
    assert upstream.reported[0].usage_sent  # the upstream was asked, and said it
    assert b'"usage"' not in raw
    events = [e for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    assert all(json.loads(e[6:])["choices"] for e in events), "a chunk that carried only usage"
    assert raw.endswith(b"data: [DONE]\n\n")
    usage = await session_usage(pg_dsn, sid, 1)
    assert [token_counts(r) for r in usage] == upstream.reported_usage


async def test_resent_conversation_is_neither_duplicated_nor_stored_twice(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str
) -> None:
    sidecar = await start_sidecar()
    sid = f"oa-{uuid.uuid4().hex[:8]}"
    u1 = {"role": "user", "content": "Weather in Paris?"}
    a1 = {"role": "assistant", "content": answer_text("Weather in Paris?")}
    u2 = {"role": "user", "content": "And tomorrow?"}
    a2 = {"role": "assistant", "content": answer_text("And tomorrow?")}
    u3 = {"role": "user", "content": "Thanks"}
    async with sdk(sidecar.url, sid) as client:
        await client.chat.completions.create(model="m", messages=[SYSTEM, u1])
        await client.chat.completions.create(model="m", messages=[SYSTEM, u1, a1, u2])
        # Streaming too, re-sending everything so far.
        stream = await client.chat.completions.create(
            model="m", messages=[SYSTEM, u1, a1, u2, a2, u3], stream=True
        )
        _ = [c async for c in stream]
    assert sent_messages(upstream, 1) == [SYSTEM, u1, a1, u2]
    assert sent_messages(upstream, 2) == [SYSTEM, u1, a1, u2, a2, u3]

    rows = await session_messages(pg_dsn, sid, 6)
    assert [r["content"] for r in rows] == [
        u1["content"],
        a1["content"],
        u2["content"],
        a2["content"],
        u3["content"],
        answer_text("Thanks"),
    ]


async def test_tool_calls_and_multipart_content_pass_untouched(
    start_sidecar: Any, upstream: FakeUpstream, pg_dsn: str
) -> None:
    sidecar = await start_sidecar()
    sid = f"oa-{uuid.uuid4().hex[:8]}"
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
    }

    async def ask_for_tool(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response(
            {
                "id": "chatcmpl-tool",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "fake-1",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [tool_call],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )

    question = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is the weather "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "in Paris?"},
        ],
    }
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with sdk(sidecar.url, sid) as client:
        upstream.chat_handler = ask_for_tool
        first = await client.chat.completions.create(
            model="fake-1", messages=[SYSTEM, question], tools=tools
        )
        calls = first.choices[0].message.tool_calls
        assert calls is not None
        assert calls[0].function.arguments == '{"city": "Paris"}'
        upstream.chat_handler = None
        follow_up = [
            SYSTEM,
            question,
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        ]
        final = await client.chat.completions.create(
            model="fake-1", messages=follow_up, tools=tools
        )
    assert sent_messages(upstream, 0) == [SYSTEM, question]
    assert upstream.requests_to(CHAT)[0].json["tools"] == tools
    assert sent_messages(upstream, 1) == follow_up
    # The turn is the user's question and the answer in text, recorded once the tools have run.
    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", "What is the weather in Paris?"),
        ("assistant", final.choices[0].message.content),
    ]


async def test_session_id_created_when_absent(
    start_sidecar: Any, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    sidecar = await start_sidecar()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(sidecar.url + CHAT, json=body) as resp:
        assert resp.status == 200
        created = resp.headers["X-Session-ID"]
    uuid.UUID(created)
    # Naming it on the next request brings the first exchange back.
    body["messages"] = [{"role": "user", "content": "again"}]
    async with http.post(sidecar.url + CHAT, json=body, headers={"X-Session-ID": created}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Session-ID"] == created
    assert sent_messages(upstream, 1) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": answer_text("hi")},
        {"role": "user", "content": "again"},
    ]


def _msgs(*pairs: tuple[str, str]) -> list[Any]:
    return [new_message(role, text, None) for role, text in pairs]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([], ["u1", "a1", "u2", "a2"]),  # nothing re-sent: everything is added
        ([("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a2")], []),
        ([("user", "u2"), ("assistant", "a2")], ["u1", "a1"]),  # the client kept the tail
        ([("user", "other")], ["u1", "a1", "u2", "a2"]),  # unrelated: nothing overlaps
        ([("user", "u0"), ("assistant", "a0"), ("user", "u1"), ("assistant", "a2")], []),
    ],
)
def test_missing_history_overlap(sent: list[tuple[str, str]], expected: list[str]) -> None:
    stored = _msgs(("user", "u1"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a2"))
    prior = [{"role": role, "content": text} for role, text in sent]
    assert [m.content for m in missing_history(stored, prior)] == expected


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n", b"\r\r"])
@pytest.mark.parametrize("piece", [1, 7, 10_000])
def test_usage_chunk_filter_takes_out_only_the_usage(sep: bytes, piece: int) -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}',
        b": a comment",
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}',
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}',
        b"data: [DONE]",
    ]
    stream = b"".join(e + sep for e in events)
    f = UsageChunkFilter()
    out = b"".join(f.feed(stream[i : i + piece]) for i in range(0, len(stream), piece))
    out += f.flush()
    # The first chunk loses its usage field (null, but the client did not ask for it); the
    # usage-only chunk is gone; everything else passes byte for byte.
    first = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}'
    assert out == b"".join(e + sep for e in [first, *events[1:3], events[4]])
