"""Reading an intercepted request's body: size limits, and gzip/deflate decoding with the same limit."""

from __future__ import annotations

import zlib

from aiohttp import web

from ..errors import BadRequest, PayloadTooLarge


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, decoded when the client compressed it, at most ``limit`` bytes either way."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return decode_body(bytes(data), encoding, limit)


def decode_body(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decoded from ``encoding`` (gzip, deflate or none), refused past ``limit`` bytes."""
    if encoding in ("", "identity"):
        return data
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BadRequest(
            f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)",
            code="unsupported_content_encoding",
        )
    # gzip or zlib header detected automatically; output bounded against decompression bombs.
    inflater = zlib.decompressobj(wbits=47)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"the body is not valid {encoding}: {e}", code="invalid_body") from e
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the decoded body is larger than {limit} bytes")
    return out
