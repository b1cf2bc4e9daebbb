"""``@frozen`` value classes: read-only to the type checker, compared and hashed by value like
frozen dataclasses, but plain slotted dataclasses at run time (see ``sidecar/frozen.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mypy import api as mypy_api

from sidecar.frozen import frozen


@frozen
class Point:
    x: int
    y: int = 0


def test_values_compare_and_hash_by_their_fields() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert len({Point(1, 2), Point(1, 2), Point(3)}) == 2
    assert dataclasses.replace(Point(1, 2), y=5) == Point(1, 5)
    assert not hasattr(Point(1), "__dict__")  # slotted


def test_the_type_checker_refuses_an_assignment_to_a_field_of_a_package_value(
    tmp_path: Path,
) -> None:
    program = tmp_path / "assigns.py"
    program.write_text(
        "from sidecar.session.model import Usage\n"
        "usage = Usage(1, 2, 3)\n"
        "usage.total_tokens = 4\n"
        "ok = Usage(1, 2, 3).total_tokens + 1\n"
    )
    out, _, status = mypy_api.run(
        [str(program), "--strict", "--no-incremental", "--follow-imports=silent"]
    )
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, out
    assert "assigns.py:3:" in errors[0], out
    assert "read-only" in errors[0], out
