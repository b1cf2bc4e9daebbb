"""The package's layering, read from its source: the boundaries the README's architecture
section promises hold (a leaf that imports nothing of ours, drivers kept inside the stores,
no HTTP in the error hierarchy or in the turn's preparation)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sidecar"


def imports(relative: str) -> set[str]:
    """Top-level names a module imports: ``sidecar`` for our own modules (relative or not)."""
    tree = ast.parse((PACKAGE / relative).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("sidecar" if node.level else (node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def modules() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))


def test_the_session_model_is_a_leaf() -> None:
    assert "sidecar" not in imports("session/model.py")


@pytest.mark.parametrize("module", modules())
def test_asyncpg_stays_inside_the_stores(module: str) -> None:
    # The throw-away servers are tooling around the sidecar rather than part of its request path.
    if module.startswith(("store/", "devservices")):
        return
    assert "asyncpg" not in imports(module)


@pytest.mark.parametrize("module", ["errors.py", "turns/prepare.py", "session/model.py"])
def test_no_http_server_where_none_belongs(module: str) -> None:
    assert "aiohttp" not in imports(module)


@pytest.mark.parametrize("module", [m for m in modules() if m.startswith("store/")])
def test_stores_know_nothing_of_http_or_the_layers_above(module: str) -> None:
    assert "aiohttp" not in imports(module)
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    ours = {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 2
    }
    # From the rest of the package, a store may use the config, the errors and the session model.
    assert ours <= {"config", "errors", "session.model"}, ours
