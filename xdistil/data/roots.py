"""Where local data lives: environment, then config, then ../shared/data, then the hub."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "XDISTIL_DATA"
_REPO = Path(__file__).resolve().parents[2]


def shared_data_candidates() -> list[Path]:
    """``../shared/data`` beside the repository (as in CI) and beside the working directory."""
    return [_REPO.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]


def resolve_data_root(config_value: str | os.PathLike | None = None) -> Path | None:
    """The local data root, or None when only the hub is left.

    Order: ``$XDISTIL_DATA``, then the config key ``data.root``, then ``../shared/data``
    when it exists. An explicitly given root that does not exist is an error, not a
    silent fall-through to the hub.
    """
    for origin, value in (("$" + ENV_VAR, os.environ.get(ENV_VAR)), ("config data.root", config_value)):
        if value:
            root = Path(value).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(f"data root from {origin} does not exist: {root}")
            return root
    for cand in shared_data_candidates():
        if cand.is_dir():
            return cand.resolve()
    return None
