"""The in-process session cache: bounded by entries and by bytes, least recently used first."""

from __future__ import annotations

from sidecar.session.cache import SessionCache, snapshot_bytes
from sidecar.session.model import Message, SessionKey, SessionSnapshot


def snapshot(sid: str, text: str = "x", messages: int = 1) -> SessionSnapshot:
    window = tuple(
        Message(seq=i, id=f"{sid}-{i}", role="user", content=text, timestamp="t")
        for i in range(messages)
    )
    return SessionSnapshot(key=SessionKey("t", sid), version="e:1", window=window)


def test_evicts_the_least_recently_used_beyond_max_entries() -> None:
    cache = SessionCache(max_entries=2)
    cache.put(snapshot("a"))
    cache.put(snapshot("b"))
    assert cache.get(SessionKey("t", "a")) is not None  # a is now the most recent
    cache.put(snapshot("c"))
    assert cache.get(SessionKey("t", "b")) is None
    assert cache.get(SessionKey("t", "a")) is not None
    assert len(cache) == 2


def test_bounded_by_bytes_and_keeps_its_count_right() -> None:
    size = snapshot_bytes(snapshot("a", "y" * 1000))
    cache = SessionCache(max_entries=100, max_bytes=3 * size)
    for sid in "abcd":
        cache.put(snapshot(sid, "y" * 1000))
    assert cache.get(SessionKey("t", "a")) is None
    assert cache.bytes == 3 * size
    cache.put(snapshot("b", "y" * 1000))  # replacing an entry does not count it twice
    assert cache.bytes == 3 * size
    cache.discard(SessionKey("t", "c"))
    assert cache.bytes == 2 * size
    cache.put(snapshot("huge", "z" * 10 * size))  # larger than the whole cache: not kept
    assert cache.get(SessionKey("t", "huge")) is None
    assert cache.bytes == 2 * size


def test_entries_without_a_version_are_not_cached() -> None:
    cache = SessionCache(max_entries=10)
    cache.put(SessionSnapshot(key=SessionKey("t", "v"), version=""))
    assert len(cache) == 0
