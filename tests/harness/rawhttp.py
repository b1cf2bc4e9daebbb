"""HTTP spoken by hand: bytes no well-behaved client would send, and the one answer read back."""

from __future__ import annotations

import asyncio

from yarl import URL


async def raw(
    base_url: str, request: bytes, *, close_after: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes and read one response (status, headers, body); ``(0, {}, b"")`` when the
    server closed without answering."""
    url = URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        if close_after:
            writer.close()
            await writer.wait_closed()
            return 0, {}, b""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except asyncio.IncompleteReadError:
            return 0, {}, b""
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
        }
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await asyncio.wait_for(reader.read(), 10)
        return status, headers, body
    finally:
        writer.close()
