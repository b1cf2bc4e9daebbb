"""Hold async dev services from synchronous code: a private event loop in a daemon thread.

The servers' child processes belong to the loop that started them, so code that calls
``asyncio.run`` several times (the benchmarks) keeps them on this one loop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

__all__ = ["in_background"]

T = TypeVar("T")


@contextlib.contextmanager
def in_background(manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """Enter ``manager`` on a private loop thread, yield its value, exit it there on the way out."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="devservices", daemon=True)
    thread.start()
    try:
        value = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result()
        try:
            yield value
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
