"""The sidecar's own HTTP/1.1 client for the upstream: keep-alive pools, bounded waits, bodies
relayed as they arrive (``client`` sends, ``pool`` keeps connections, ``response`` reads)."""

from .client import UpstreamClient
from .pool import ConnectTimedOut
from .response import Response, UpstreamBroke

__all__ = ["ConnectTimedOut", "Response", "UpstreamBroke", "UpstreamClient"]
