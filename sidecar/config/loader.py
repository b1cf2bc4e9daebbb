"""Reading the config file: the YAML at ``-c FILE`` or ``$SIDECAR_CONFIG``, validated."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from ..errors import ConfigError
from .environment import CONFIG_ENV
from .model import Config


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Config:
    """Read and validate the YAML file at ``path`` (or ``$SIDECAR_CONFIG``)."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_ENV) or None
        if path is None:
            raise ConfigError(
                f"config error: no config file given (use -c FILE or set {CONFIG_ENV})"
            )
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"config error: file not found: {p}") from e
    except OSError as e:
        raise ConfigError(f"config error: cannot read {p}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"config error: {p}: {problem}{where}") from e
    return Config.from_mapping({} if data is None else data, env)
