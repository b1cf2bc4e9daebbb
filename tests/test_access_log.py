"""The access log's own path: lines identical to what the formatters make of a record, in the
log's order, and none lost when the process stops."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar import logs

FIELDS: dict[str, Any] = {
    "request_id": "r-1",
    "method": "POST",
    "route": "/api/tasks",
    "adapter": "tasks",
    "status": 200,
    "duration_ms": 3.21,
    "upstream_ms": 1.5,
    "overhead_ms": None,
    "session_id": "s-1",
    "degraded": None,
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logs.flush_logs()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logs._handler = None


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_access_line_is_what_the_formatter_makes_of_the_record(
    fmt: str, restore_logging: None
) -> None:
    stream = io.StringIO()
    logs.setup_logging("INFO", fmt, stream)  # type: ignore[arg-type]
    handler = logs._handler
    assert handler is not None
    created = 1_764_460_800.123456  # a fixed moment, so both lines carry the same time
    message = "POST /api/tasks 200"
    record = logs.access_log.makeRecord(
        logs.ACCESS_LOGGER, logging.INFO, __file__, 1, message, (), None, extra={"access": FIELDS}
    )
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    expected = handler.formatter.format(record)  # type: ignore[union-attr]
    assert handler.line_formatter.format_access(created, message, FIELDS) == expected
    if fmt == "json":
        line = json.loads(expected)
        assert line["request_id"] == "r-1"
        assert line["status"] == 200
    else:
        assert "request_id=r-1" in expected
        assert "overhead_ms" not in expected


def test_access_lines_keep_their_place_and_reach_the_stream_unprompted(
    restore_logging: None,
) -> None:
    stream = io.StringIO()
    logs.setup_logging("INFO", "json", stream)

    async def serve() -> list[dict[str, Any]]:
        logs.log_access({**FIELDS, "request_id": "first"})
        logging.getLogger("sidecar.test").warning("after the first request")
        logs.log_access({**FIELDS, "request_id": "second"})
        # Nothing else is logged: the second line must still come out on its own.
        for _ in range(200):
            if "second" in stream.getvalue():
                break
            await asyncio.sleep(0.01)
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    lines = asyncio.run(serve())
    assert [line.get("request_id") or line["message"] for line in lines] == [
        "first",
        "after the first request",
        "second",
    ]


def test_pending_lines_are_written_when_logging_shuts_down(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.setup_logging("INFO", "text", stream)

    async def burst() -> None:
        for i in range(10):
            logs.log_access({**FIELDS, "request_id": f"burst-{i}"})

    asyncio.run(burst())
    logs.flush_logs()
    text = stream.getvalue()
    assert [f"request_id=burst-{i}" in text for i in range(10)] == [True] * 10


def test_a_line_logged_on_a_new_loop_comes_out_with_the_one_the_old_loop_left(
    restore_logging: None,
) -> None:
    # The first loop ends with its line pending and its flush timer never run; the next loop's
    # line must schedule a flush of its own, which writes both.
    stream = io.StringIO()
    logs.setup_logging("INFO", "text", stream)

    async def first() -> None:
        logs.log_access({**FIELDS, "request_id": "on-the-old-loop"})

    async def second() -> str:
        logs.log_access({**FIELDS, "request_id": "on-the-new-loop"})
        for _ in range(200):
            if "on-the-new-loop" in stream.getvalue():
                break
            await asyncio.sleep(0.01)
        return stream.getvalue()

    asyncio.run(first())
    assert "on-the-old-loop" not in stream.getvalue()
    text = asyncio.run(second())
    assert text.index("request_id=on-the-old-loop") < text.index("request_id=on-the-new-loop")
