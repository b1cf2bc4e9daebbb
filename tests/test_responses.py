"""The ``responses`` adapter through the official ``openai`` SDK's ``client.responses.create``:
history prepended to ``input``, ``instructions`` untouched, ``previous_response_id`` left alone
but recorded, streams relayed event by event, answers and usage in PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.harness import answer_text
from tests.harness.responses import RESPONSES, FakeResponses
from tests.harness.waiting import pg_fetch, session_messages, session_usage

WEATHER_TOOL = {
    "type": "function",
    "name": "weather",
    "description": "The weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
async def backend() -> AsyncIterator[FakeResponses]:
    fake = FakeResponses()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def sidecar_url(start_sidecar: Any, backend: FakeResponses) -> str:
    sidecar = await start_sidecar(upstream={"url": backend.url})
    return str(sidecar.url)


def sdk(url: str, session_id: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=url + "/v1",
        api_key="k",
        default_headers={"X-Session-ID": session_id},
        max_retries=0,
    )


def history_item(role: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": text}


async def test_string_and_list_input_get_history_instructions_untouched(
    sidecar_url: str, backend: FakeResponses, pg_dsn: str
) -> None:
    sid = f"rs-{uuid.uuid4().hex[:8]}"
    async with sdk(sidecar_url, sid) as client:
        first = await client.responses.create(
            model="gpt-4.1", instructions="Be terse.", input="Weather in Paris?"
        )
        second = await client.responses.create(
            model="gpt-4.1",
            instructions="Be terse.",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "And Rome?"}]}],
        )
    a1, a2 = answer_text("Weather in Paris?"), answer_text("And Rome?")
    assert first.output_text == a1
    assert second.output_text == a2
    sent = backend.bodies(RESPONSES)
    assert sent[0]["input"] == "Weather in Paris?"  # nothing stored yet: sent as it came
    assert sent[1]["instructions"] == "Be terse."
    assert sent[1]["input"] == [
        history_item("user", "Weather in Paris?"),
        history_item("assistant", a1),
        {"role": "user", "content": [{"type": "input_text", "text": "And Rome?"}]},
    ]
    rows = await session_messages(pg_dsn, sid, 4)
    assert [(r["role"], r["content"]) for r in rows] == [
        ("user", "Weather in Paris?"),
        ("assistant", a1),
        ("user", "And Rome?"),
        ("assistant", a2),
    ]
    usage = await session_usage(pg_dsn, sid, 2)
    assert [r["total_tokens"] for r in usage] == [
        first.usage.total_tokens,
        second.usage.total_tokens,
    ]  # type: ignore[union-attr]
    assert [r["prompt_tokens"] for r in usage] == [
        first.usage.input_tokens,
        second.usage.input_tokens,
    ]  # type: ignore[union-attr]
    assert {r["model"] for r in usage} == {"gpt-4.1"}


async def test_string_input_becomes_items_when_history_goes_first(
    sidecar_url: str, backend: FakeResponses, pg_dsn: str
) -> None:
    sid = f"rs-{uuid.uuid4().hex[:8]}"
    async with sdk(sidecar_url, sid) as client:
        await client.responses.create(model="m", input="Hello")
        await client.responses.create(model="m", input="Again")
    assert backend.bodies(RESPONSES)[1]["input"] == [
        history_item("user", "Hello"),
        history_item("assistant", answer_text("Hello")),
        {"role": "user", "content": "Again"},
    ]


async def test_previous_response_id_injects_nothing_and_is_recorded(
    sidecar_url: str, backend: FakeResponses, pg_dsn: str
) -> None:
    sid = f"rs-{uuid.uuid4().hex[:8]}"
    async with sdk(sidecar_url, sid) as client:
        first = await client.responses.create(model="m", input="Weather in Paris?")
        second = await client.responses.create(
            model="m", input="And Rome?", previous_response_id=first.id
        )
    assert second.output_text == answer_text("And Rome?")
    assert backend.bodies(RESPONSES)[1]["input"] == "And Rome?"
    # The backend had the whole conversation from its own store, once.
    assert [i.get("role") for i in backend.conversations[1]] == ["user", "assistant", "user"]
    rows = await session_messages(pg_dsn, sid, 4)
    assert [r["content"] for r in rows][2:] == ["And Rome?", answer_text("And Rome?")]


async def test_stream_relayed_event_by_event_and_recorded(
    sidecar_url: str, backend: FakeResponses, pg_dsn: str
) -> None:
    sid = f"rs-{uuid.uuid4().hex[:8]}"
    backend.hold_streams = True
    q = "Tell me about Paris"
    kinds: list[str] = []
    deltas: list[str] = []
    completed: Any = None
    async with sdk(sidecar_url, sid) as client:
        stream = await client.responses.create(model="gpt-4.1", input=q, stream=True)
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                if not deltas:
                    # The backend holds the rest until this first delta is seen here.
                    backend.release()
                deltas.append(event.delta)
            elif event.type == "response.completed":
                completed = event.response
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert len(deltas) == 3
    assert "".join(deltas) == answer_text(q)
    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"], r["partial"]) for r in rows] == [
        ("user", q, False),
        ("assistant", answer_text(q), False),
    ]
    usage = await session_usage(pg_dsn, sid, 1)
    assert usage[0]["total_tokens"] == completed.usage.total_tokens
    assert usage[0]["model"] == "gpt-4.1"


@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_round_trip_stores_question_and_answer(
    sidecar_url: str, backend: FakeResponses, pg_dsn: str, stream: bool
) -> None:
    sid = f"rs-{uuid.uuid4().hex[:8]}"
    q = "Weather in Paris?"
    async with sdk(sidecar_url, sid) as client:

        async def ask(**kwargs: Any) -> Any:
            if not stream:
                return await client.responses.create(model="m", tools=[WEATHER_TOOL], **kwargs)
            events = await client.responses.create(
                model="m", tools=[WEATHER_TOOL], stream=True, **kwargs
            )
            final = None
            async for event in events:
                if event.type == "response.completed":
                    final = event.response
            return final

        first = await ask(input=q)
        call = first.output[0]
        assert call.type == "function_call"
        final = await ask(
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
            previous_response_id=first.id,
        )
    assert final.output_text == answer_text(q)
    rows = await session_messages(pg_dsn, sid, 2)
    assert [(r["role"], r["content"]) for r in rows] == [("user", q), ("assistant", answer_text(q))]
    assert len(await pg_fetch(pg_dsn, "SELECT 1 FROM messages WHERE session_id = $1", sid)) == 2
