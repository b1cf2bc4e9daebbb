"""The status an error is counted and logged with is the status it is answered with."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, TransferEncodingError
from aiohttp.test_utils import make_mocked_request

from sidecar.errors import UpstreamTimeout
from sidecar.middleware import CLIENT_GONE, answer_error, status_of


@pytest.mark.parametrize(
    "error",
    [
        UpstreamTimeout("slow"),
        web.HTTPNotFound(),
        BadHttpMessage("bad"),
        TransferEncodingError("a chunk size that is not hexadecimal"),
        RuntimeError("a bug"),
    ],
)
def test_an_error_is_counted_with_the_status_it_is_answered_with(error: Any) -> None:
    request = make_mocked_request("POST", "/api/tasks")
    assert status_of(error) == answer_error(request, error).status


def test_a_client_gone_is_counted_499() -> None:
    assert status_of(ConnectionResetError()) == CLIENT_GONE
