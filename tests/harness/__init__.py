"""Test harness: the fake upstream and ways to run the sidecar (servers: sidecar.devservices)."""

from .sidecar import (
    ADMIN_TOKEN,
    RunningSidecar,
    SidecarProcess,
    base_config,
    deep_merge,
    running_sidecar,
)
from .upstream import (
    FakeUpstream,
    RecordedRequest,
    ReportedAnswer,
    answer_text,
    count_tokens,
    deterministic_bytes,
    fake_usage,
)

__all__ = [
    "ADMIN_TOKEN",
    "FakeUpstream",
    "RecordedRequest",
    "ReportedAnswer",
    "RunningSidecar",
    "SidecarProcess",
    "answer_text",
    "base_config",
    "count_tokens",
    "deep_merge",
    "deterministic_bytes",
    "fake_usage",
    "running_sidecar",
]
