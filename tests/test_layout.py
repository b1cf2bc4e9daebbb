"""The package's layering, read from its source: the boundaries the README's architecture
section promises hold (a leaf that imports nothing of ours, drivers kept inside the stores,
no HTTP in the error hierarchy or in the turn's preparation)."""

from __future__ import annotations

import ast
import re
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


def own_modules(relative: str) -> set[str]:
    """Our modules a module imports, named from the package's root (``session.model``)."""
    tree = ast.parse((PACKAGE / relative).read_text(encoding="utf-8"))
    here = Path(relative).parent.parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)]
            found.add(".".join([*base, *(node.module or "").split(".")]).strip("."))
    return found


def test_the_session_model_is_a_leaf() -> None:
    # Beside the decorator of value classes, itself a leaf.
    assert own_modules("session/model.py") <= {"frozen"}
    assert "sidecar" not in imports("frozen.py")


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
    # From the rest of the package, a store may use the config, the errors, the session model
    # and the decorator of value classes.
    assert ours <= {"config", "errors", "session.model", "frozen"}, ours


# The context engine's rule tables are data more than code; splitting them would scatter one table.
LONG_BY_NATURE = {"context/timeexpr.py", "context/rules.py"}
MAX_LINES = 350


@pytest.mark.parametrize("module", modules())
def test_every_module_is_short_and_says_its_job(module: str) -> None:
    text = (PACKAGE / module).read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(text)), f"{module} has no docstring saying its job"
    if module not in LONG_BY_NATURE:
        lines = len(text.splitlines())
        assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"


@pytest.mark.parametrize("module", sorted(LONG_BY_NATURE))
def test_the_allowed_long_modules_exist(module: str) -> None:
    # A stale allow-list would let a renamed module grow unchecked under its new name.
    assert (PACKAGE / module).is_file()


def our_imports(relative: str) -> set[str]:
    """The modules of ours a module imports, as paths relative to the package (``store/redis.py``)."""
    path = PACKAGE / relative
    here = path.parent.relative_to(PACKAGE).parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = [*here[: len(here) - (node.level - 1)], *(node.module or "").split(".")]
        base = [part for part in base if part]
        for alias in node.names:
            for candidate in ([*base, alias.name], base):
                target = Path(*candidate) if candidate else Path()
                if (PACKAGE / target).with_suffix(".py").is_file():
                    found.add(str(target.with_suffix(".py")))
                    break
                if (PACKAGE / target / "__init__.py").is_file():
                    found.add(str(target / "__init__.py"))
                    break
    found.discard(relative)
    return found


def test_imports_flow_one_way() -> None:
    """No module imports, directly or through others, a module that imports it back."""
    graph = {m: our_imports(m) for m in modules()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycle = [*trail[trail.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*trail, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def readme_rows() -> list[list[str]]:
    """The names in the first column of each row of the README's module map, top row first."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    return [
        re.findall(r"`([^`]+)`", line.split("|")[1])
        for line in section.splitlines()
        if line.startswith("| `")
    ]


def readme_row(rows: list[list[str]], module: str) -> int | None:
    """The row naming ``module``, by its most specific name (``session/model.py`` over ``session/``)."""
    matches = [
        (len(name), i)
        for i, names in enumerate(rows)
        for name in names
        if module == name or (name.endswith("/") and module.startswith(name))
    ]
    return max(matches)[1] if matches else None


def test_the_readme_module_map_matches_the_imports() -> None:
    """Every module is in the map, and imports only from its own row or the rows below it."""
    rows = readme_rows()
    upward = []
    for module in modules():
        if module in ("__init__.py", "__main__.py"):
            continue
        row = readme_row(rows, module)
        assert row is not None, f"{module} is missing from the README's module map"
        for target in our_imports(module):
            target_row = readme_row(rows, target)
            if target_row is not None and target_row < row:
                upward.append(f"{module} imports {target}, listed above it")
    assert not upward, upward
