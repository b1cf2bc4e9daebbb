"""The image builds from pinned parts only: a base pinned by digest, and exactly the dependencies
requirements.lock pins, each checked by hash. Static checks (no image engine runs here)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _pins() -> dict[str, tuple[str, list[str]]]:
    """Package name -> (pinned version, hashes)."""
    text = re.sub(r"\\\n", " ", LOCK.read_text(encoding="utf-8"))
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$", line)
        if m:
            hashes = re.findall(r"sha256:([0-9a-f]{64})", m.group(3))
            pins[canonicalize_name(m.group(1))] = (m.group(2), hashes)
        else:
            assert not line.strip() or line.lstrip().startswith("#"), (
                f"unexpected lock line: {line}"
            )
    return pins


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_base_image_is_pinned_by_digest() -> None:
    bases = [args.split()[0] for word, args in _instructions() if word == "FROM"]
    assert len(bases) == 2
    for base in bases:
        assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    assert len(set(bases)) == 1, "build and runtime stages must use the same base"


def test_lock_pins_every_runtime_otel_and_build_dependency_with_hashes() -> None:
    project = _pyproject()
    pins = _pins()
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    for extra in ("otel", "fast"):
        wanted += [Requirement(r) for r in project["project"]["optional-dependencies"][extra]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: run `make lock`"
        version, hashes = pins[name]
        assert req.specifier.contains(version), f"{req.name}=={version} does not satisfy {req}"
        assert hashes, f"{req.name} has no hash in requirements.lock"
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no hash"


def test_dockerfile_installs_the_lock_by_hash_and_the_package_without_resolving() -> None:
    runs = [args for word, args in _instructions() if word == "RUN"]
    copies = [args for word, args in _instructions() if word == "COPY"]
    assert any("requirements.lock" in c for c in copies)
    lock_install = [r for r in runs if "-r requirements.lock" in r]
    assert lock_install, "the Dockerfile does not install requirements.lock"
    assert all("--require-hashes" in r for r in lock_install)
    package_install = [r for r in runs if re.search(r"pip install .*\s\.(\s|$)", r)]
    assert package_install, "the Dockerfile does not install the package"
    for r in package_install:
        # Anything resolved here would bypass the lock (dependencies, or the build backend).
        assert "--no-deps" in r
        assert "--no-build-isolation" in r
    pip_installs = [r for r in runs if "pip install" in r]
    assert len(pip_installs) == len(lock_install) + len(package_install)


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [args for word, args in _instructions() if word == "COPY" and "--from" not in args]
    for args in copies:
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
                f"COPY {source}: excluded by .dockerignore"
            )
    # pyproject.toml names these; the build fails without them.
    assert {"README.md", "LICENSE"} <= {s for a in copies for s in a.split()[:-1]}
