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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")


def hub_offline_reason(flags: tuple[str, ...] = ("HF_HUB_OFFLINE",), timeout: float = 2.0) -> str | None:
    """Why the Hugging Face hub cannot be used now ("HF_HUB_OFFLINE is set", "the hub (URL)
    cannot be reached"), or None when a TCP connect to it succeeds within ``timeout`` s.

    The name lookup runs in a thread, as getaddrinfo has no timeout of its own: without a
    network this answers in about ``timeout`` seconds instead of the hub clients' ~30 s of retries.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    for var in flags:  # the environment variables that switch the client at hand offline
        if _env_flag(var):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return None if ok and ok[0] else f"the hub ({endpoint}) cannot be reached"
