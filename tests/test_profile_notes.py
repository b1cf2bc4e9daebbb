"""The profile's system note on the Anthropic and Responses APIs (``memory.profile_note``):
after the client's own system text, in the user's language, for that user only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sidecar.adapters.anthropic import with_note
from tests.harness.anthropic import MESSAGES, FakeAnthropic
from tests.harness.responses import RESPONSES, FakeResponses

NOTES = {"memory": {"profile": True, "profile_note": True}}


@pytest.fixture
async def anthropic_backend() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def responses_backend() -> AsyncIterator[FakeResponses]:
    fake = FakeResponses()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], sid: str) -> None:
    async with http.post(url, json=body, headers={"X-Session-ID": sid}) as r:
        assert r.status == 200, await r.text()
        await r.read()


def message(text: str, user: str | None, system: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-fake-1",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
    }
    if user is not None:
        body["metadata"] = {"user_id": user}
    if system is not None:
        body["system"] = system
    return body


async def test_anthropic_users_are_named_by_metadata_and_get_the_note_after_system(
    start_sidecar: Any, anthropic_backend: FakeAnthropic, http: aiohttp.ClientSession
) -> None:
    sc = await start_sidecar(upstream={"url": anthropic_backend.url}, **NOTES)
    url = f"{sc.url}{MESSAGES}"
    await post(http, url, message("I live in Berlin. Call me Sam.", "sam"), "a-1")
    await post(http, url, message("What should I wear today?", "sam", "You are terse."), "a-2")
    sent = anthropic_backend.bodies(MESSAGES)[-1]
    assert sent["system"].startswith("You are terse.\n\nAbout the user")
    assert "Berlin" in sent["system"]
    assert "Sam" in sent["system"]
    # Blocks of system text get one more block.
    blocks = [{"type": "text", "text": "You are terse."}]
    await post(http, url, message("And tomorrow?", "sam", blocks), "a-2")
    sent = anthropic_backend.bodies(MESSAGES)[-1]
    assert sent["system"][0] == blocks[0]
    assert sent["system"][1]["type"] == "text"
    assert "Berlin" in sent["system"][1]["text"]
    # Another user, and no user, get the system text as sent.
    await post(http, url, message("What should I wear?", "max", "You are terse."), "a-3")
    assert anthropic_backend.bodies(MESSAGES)[-1]["system"] == "You are terse."
    await post(http, url, message("What should I wear?", None, "You are terse."), "a-4")
    assert anthropic_backend.bodies(MESSAGES)[-1]["system"] == "You are terse."


async def test_responses_note_comes_after_the_clients_system_items(
    start_sidecar: Any, responses_backend: FakeResponses, http: aiohttp.ClientSession
) -> None:
    """Responses names no user in its body: the user comes from a trusted gateway here."""
    sc = await start_sidecar(
        upstream={"url": responses_backend.url}, identity={"trust_headers": True}, **NOTES
    )
    url = f"{sc.url}{RESPONSES}"
    gateway = {"X-Tenant-ID": "acme", "X-User-ID": "li"}

    async def ask(body: dict[str, Any], sid: str) -> list[Any]:
        async with http.post(url, json=body, headers={**gateway, "X-Session-ID": sid}) as r:
            assert r.status == 200, await r.text()
            await r.read()
        sent: list[Any] = responses_backend.bodies(RESPONSES)[-1]["input"]
        return sent

    await ask({"model": "gpt-4.1", "input": "我住在上海，请用中文回答"}, "r-1")
    sent = await ask({"model": "gpt-4.1", "instructions": "Be terse.", "input": "天气如何"}, "r-2")
    assert sent[0]["role"] == "system"
    assert "上海" in sent[0]["content"]
    assert sent[-1] == {"role": "user", "content": "天气如何"}
    own = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": "明天呢"},
    ]
    sent = await ask({"model": "gpt-4.1", "input": own}, "r-3")
    assert sent[0] == own[0]
    assert sent[1]["role"] == "system"
    assert "上海" in sent[1]["content"]
    assert sent[-1] == own[1]


def test_a_system_of_another_shape_is_left_as_sent() -> None:
    assert with_note(None, "n") == "n"
    assert with_note("s", "n") == "s\n\nn"
    assert with_note({"odd": 1}, "n") == {"odd": 1}
