"""Immutable value classes that are cheap to make: ``@frozen``.

``@dataclass(frozen=True)`` assigns each field in ``__init__`` through ``object.__setattr__``,
which makes building a value about five times dearer than a plain dataclass's (1.0 against
0.2 µs for eight fields). A turn builds some forty values (its messages, usage, snapshot, the
question and answer, the outbox entries the writer reads back), so that added up to about 4 % of
a turn's CPU. ``@frozen`` classes are frozen for the type checker (PEP 681's ``frozen_default``:
mypy refuses an assignment to a field) and plain slotted dataclasses at run time, hashed by
their fields as frozen dataclasses are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    """A slotted dataclass whose fields are read-only to the type checker."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
