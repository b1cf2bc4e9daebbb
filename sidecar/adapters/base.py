"""What every protocol adapter provides to the turn pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..frozen import frozen
from ..session.model import Message, Usage


@dataclass(slots=True)
class Incoming:
    """A parsed intercepted request."""

    body: dict[str, Any]
    query: str  # the user's new message
    session_id: str | None  # None: the sidecar names a new session
    request_context: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    # The earlier answer this request goes on from without re-sending the question
    # (Responses' ``previous_response_id``).
    continues: str | None = None


@frozen
class Injection:
    session_id: str
    history: Sequence[Message]
    context: dict[str, Any]
    completed_query: str | None
    rewrite: str  # replace | annotate | off
    # Chat APIs: one system message stating the user's remembered facts (``memory.profile_note``),
    # placed after the client's own system messages.
    system_note: str | None = None


class StreamReader(Protocol):
    """Reads a copy of a streamed answer as it passes (the client gets the bytes unchanged)."""

    # The answer asks the client to call tools: the turn is recorded with the answer that follows.
    tool_calls: bool

    def feed(self, chunk: bytes) -> None: ...

    def end(self) -> None:
        """The stream closed: read what is left in the buffer."""
        ...

    @property
    def text(self) -> str: ...

    @property
    def finished(self) -> bool:
        """The stream said its answer is whole (recorded as not partial)."""
        ...

    @property
    def complete(self) -> bool:
        """Nothing more of this turn will come: it may be recorded now, before the connection
        ends (some backends keep it open after the answer)."""
        ...

    def result_usage(self) -> Usage: ...

    @property
    def whole(self) -> Any:
        """The answer as one object, when the stream ends by sending it whole (Responses'
        ``response.completed``); else None."""
        ...


class Adapter(Protocol):
    name: str
    # Whether an answer may be an asynchronous task (a ``task_id``, the result read later).
    async_tasks: bool

    def parse(self, raw: bytes, headers: Any) -> Incoming: ...

    def inject(self, incoming: Incoming, injection: Injection) -> dict[str, Any]: ...

    def answer(self, body: Any) -> tuple[str | None, Usage]: ...

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        """Adjust a streaming request (e.g. ask for usage); returns True when usage the client
        did not ask for must be taken out of the stream it sees."""
        ...

    def continuation_id(self, answer: Any) -> str | None:
        """The id by which a later request goes on from ``answer`` (one that waits for tool
        results) without re-sending the question: Responses' response id. None where clients
        re-send the conversation."""
        ...

    def stream_reader(self) -> StreamReader:
        """A fresh reader for one streamed answer of this adapter's protocol."""
        ...
