"""Reading and filtering Server-Sent Events: recorded streams in each backend's shape, every line
ending the specification allows, and every way a network can cut them into chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar.adapters.anthropic import AnthropicStream
from sidecar.adapters.base import StreamReader
from sidecar.adapters.responses import ResponsesStream
from sidecar.adapters.shannon import ShannonStream
from sidecar.adapters.sse import EventReader, SSEAccumulator, UsageChunkFilter, split_event
from sidecar.session.model import Usage


def sse(*events: dict[str, Any] | str, name: str | None = None) -> list[bytes]:
    out = []
    for e in events:
        data = e if isinstance(e, str) else json.dumps(e)
        out.append((f"event: {name}\n" if name else "") + f"data: {data}")
    return [o.encode() for o in out]


# An OpenAI stream with stream_options.include_usage: usage null on every chunk, then a usage
# chunk with choices [] (platform.openai.com chat streaming reference; openai-python
# src/openai/types/chat/chat_completion_chunk.py).
_BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
OPENAI = sse(
    {
        **_BASE,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "usage": None,
    },
    {
        **_BASE,
        "choices": [
            {"index": 0, "delta": {"content": "Bonjour"}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    },
    {
        **_BASE,
        "choices": [
            {"index": 0, "delta": {"content": " Paris"}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    },
    {
        **_BASE,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        "usage": None,
    },
    {
        **_BASE,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    },
    "[DONE]",
)
# LiteLLM's proxy: the usage arrives on a chunk whose one choice has an empty delta
# (litellm/litellm_core_utils/streaming_handler.py, CustomStreamWrapper's last chunk).
_LITE = {
    "id": "chatcmpl-2",
    "created": 1,
    "model": "claude-3-5-haiku",
    "object": "chat.completion.chunk",
    "system_fingerprint": None,
}
LITELLM = sse(
    {**_LITE, "choices": [{"index": 0, "delta": {"content": "Bonjour", "role": "assistant"}}]},
    {**_LITE, "choices": [{"index": 0, "delta": {"content": " Paris"}}]},
    {**_LITE, "choices": [{"finish_reason": "stop", "index": 0, "delta": {}}]},
    {
        **_LITE,
        "choices": [{"index": 0, "delta": {}}],
        "usage": {
            "completion_tokens": 3,
            "prompt_tokens": 12,
            "total_tokens": 15,
            "completion_tokens_details": None,
            "prompt_tokens_details": None,
        },
    },
    "[DONE]",
)
ENDINGS = [b"\n", b"\r\n", b"\r"]


def stream_of(events: list[bytes], eol: bytes) -> bytes:
    return b"".join(e.replace(b"\n", eol) + eol + eol for e in events)


def two_pieces(data: bytes) -> Iterator[list[bytes]]:
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def filtered(data: bytes, pieces: list[bytes]) -> bytes:
    f = UsageChunkFilter()
    return b"".join(f.feed(p) for p in pieces) + f.flush()


def payloads(data: bytes) -> list[Any]:
    reader = Collect()
    reader.feed(data)
    reader.end()
    return [d if d == "[DONE]" else json.loads(d) for _, d in reader.seen]


class Collect(EventReader):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def on_event(self, name: str, data: bytes) -> None:
        self.seen.append((name, data.decode()))


@pytest.mark.parametrize("eol", ENDINGS)
@pytest.mark.parametrize("events", [OPENAI, LITELLM], ids=["openai", "litellm"])
def test_a_client_that_did_not_ask_sees_no_usage(events: list[bytes], eol: bytes) -> None:
    data = stream_of(events, eol)
    whole = filtered(data, [data])
    seen = payloads(whole)
    assert seen[-1] == "[DONE]"
    chunks = seen[:-1]
    assert all("usage" not in c for c in chunks)
    # Only the chunk that carried nothing but usage is gone; the rest keep their content.
    assert len(chunks) == len(events) - 2
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Bonjour Paris"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    for pieces in two_pieces(data):
        assert filtered(data, pieces) == whole
    assert filtered(data, [bytes([b]) for b in data]) == whole


@pytest.mark.parametrize("eol", ENDINGS)
@pytest.mark.parametrize("events", [OPENAI, LITELLM], ids=["openai", "litellm"])
def test_the_upstreams_usage_is_read_from_either_shape(events: list[bytes], eol: bytes) -> None:
    data = stream_of(events, eol)
    for pieces in [*two_pieces(data), [bytes([b]) for b in data]]:
        acc = SSEAccumulator()
        for p in pieces:
            acc.feed(p)
        acc.end()
        assert acc.text == "Bonjour Paris"
        assert acc.complete
        assert acc.finished
        usage = acc.result_usage()
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 3, 15)


def test_cr_only_events_are_events() -> None:
    assert split_event(b"data: a\r\rdata: b\r\r") == (b"data: a", b"\r\r", b"data: b\r\r")
    # A CR at the very end may be half of a CRLF: it ends the event once the stream is over.
    assert split_event(b"data: a\r\r") is None
    assert split_event(b"data: a\r\r", final=True) == (b"data: a", b"\r\r", b"")
    reader = Collect()
    reader.feed(b"data: a\r\r")
    reader.end()
    assert reader.seen == [("", "a")]
    mixed = Collect()
    mixed.feed(b"event: x\rdata: 1\r\ndata: 2\n\r\ndata: 3\r\n\r\n")
    assert mixed.seen == [("x", "1\n2"), ("", "3")]


def read_all(reader: StreamReader, data: bytes, pieces: list[bytes]) -> StreamReader:
    for p in pieces:
        reader.feed(p)
    reader.end()
    return reader


# Anthropic's Messages stream (anthropic-sdk-python: src/anthropic/types/raw_message_*_event.py;
# the API reference's streaming example), with a tool_use block whose input must not become text.
ANTHROPIC = [
    *sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
        name="message_start",
    ),
    *sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        name="content_block_start",
    ),
    *sse({"type": "ping"}, name="ping"),
    *sse(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Bonjour"},
        },
        name="content_block_delta",
    ),
    *sse(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " Paris"},
        },
        name="content_block_delta",
    ),
    *sse({"type": "content_block_stop", "index": 0}, name="content_block_stop"),
    *sse(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
        },
        name="content_block_start",
    ),
    *sse(
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
        },
        name="content_block_delta",
    ),
    *sse({"type": "content_block_stop", "index": 1}, name="content_block_stop"),
    *sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        name="message_delta",
    ),
    *sse({"type": "message_stop"}, name="message_stop"),
]


def test_anthropic_stream_read_at_every_cut() -> None:
    data = stream_of(ANTHROPIC, b"\n")
    for pieces in [*two_pieces(data), [bytes([b]) for b in data]]:
        r = read_all(AnthropicStream(), data, pieces)
        assert r.text == "Bonjour Paris"
        assert r.complete
        assert not r.tool_calls
        assert r.result_usage() == Usage(25, 15, 40, "claude-sonnet-4-5")
    partial = AnthropicStream()
    partial.feed(data[: data.index(b"event: message_delta")])
    assert not partial.complete
    assert not partial.finished


# The Responses stream (openai-python: src/openai/types/responses/response_*_event.py).
_RESP = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "model": "gpt-4.1",
    "status": "in_progress",
    "output": [],
    "usage": None,
}
_ITEM = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Bonjour Paris", "annotations": []}],
}
RESPONSES = sse(
    {"type": "response.created", "sequence_number": 0, "response": _RESP},
    {
        "type": "response.output_text.delta",
        "sequence_number": 1,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Bonjour",
        "logprobs": [],
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 2,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": " Paris",
        "logprobs": [],
    },
    {
        "type": "response.completed",
        "sequence_number": 3,
        "response": {
            **_RESP,
            "status": "completed",
            "output": [_ITEM],
            "usage": {
                "input_tokens": 20,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 4,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 24,
            },
        },
    },
)


def test_responses_stream_read_at_every_cut() -> None:
    data = b"".join(
        b"event: " + json.loads(e[6:])["type"].encode() + b"\n" + e + b"\n\n" for e in RESPONSES
    )
    for pieces in [*two_pieces(data), [bytes([b]) for b in data]]:
        r = read_all(ResponsesStream(), data, pieces)
        assert r.text == "Bonjour Paris"
        assert r.complete
        assert r.result_usage() == Usage(20, 4, 24, "gpt-4.1")


# Shannon's gateway (Kocoro-lab/Shannon go/orchestrator/internal/httpapi/streaming.go).
SHANNON = [
    b": connected to workflow task-1",
    *sse(
        {"delta": "Bonj", "workflow_id": "task-1", "agent_id": "simple-agent", "seq": 3},
        name="thread.message.delta",
    ),
    *sse(
        {
            "response": "draft",
            "workflow_id": "task-1",
            "agent_id": "simple-agent",
            "seq": 4,
            "metadata": {"tokens_used": 9, "model_used": "gpt-5-mini"},
        },
        name="thread.message.completed",
    ),
    *sse(
        {
            "response": "Bonjour Paris",
            "workflow_id": "task-1",
            "agent_id": "final_output",
            "seq": 5,
            "metadata": {
                "tokens_used": 40,
                "model_used": "gpt-5-mini",
                "provider": "openai",
                "input_tokens": 30,
                "output_tokens": 10,
                "cost_usd": 0.002,
            },
        },
        name="thread.message.completed",
    ),
    *sse(
        {
            "workflow_id": "task-1",
            "type": "WORKFLOW_COMPLETED",
            "agent_id": "simple",
            "message": "All done",
            "timestamp": "2026-01-01T00:00:00Z",
            "seq": 6,
        },
        name="WORKFLOW_COMPLETED",
    ),
    *sse("[DONE]", name="done"),
]


def test_shannon_stream_completes_with_the_final_agents_message() -> None:
    data = stream_of(SHANNON, b"\n")
    final_at = data.index(b"event: WORKFLOW_COMPLETED")
    for pieces in [*two_pieces(data), [bytes([b]) for b in data]]:
        r = ShannonStream()
        for p in pieces:
            r.feed(p)
        assert r.complete
        assert r.text == "Bonjour Paris"
        assert r.result_usage() == Usage(30, 10, 40, "gpt-5-mini", 0.002, "openai")
    early = ShannonStream()
    early.feed(data[:final_at])
    assert early.complete  # the final agent's message is there: no need to wait for the close
    intermediate = ShannonStream()
    intermediate.feed(data[: data.index(b'"final_output"')])
    assert not intermediate.complete


def test_shannon_workflow_completed_before_the_final_message_waits_for_it() -> None:
    # Some workflows send WORKFLOW_COMPLETED before the final agent's message.
    early_end = [SHANNON[0], SHANNON[1], SHANNON[2], SHANNON[4], SHANNON[3], SHANNON[5]]
    data = stream_of(early_end, b"\n")
    final_at = data.index(b"event: thread.message.completed", data.index(b"WORKFLOW"))
    r = ShannonStream()
    r.feed(data[:final_at])
    assert not r.complete  # only an intermediate agent's message so far
    r.feed(data[final_at:])
    assert r.complete
    assert r.text == "Bonjour Paris"
