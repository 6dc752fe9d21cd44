"""Replace a directory by a fully written one, by renames only (no half-written folder)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing an existing ``dst``.

    ``os.replace`` cannot overwrite a non-empty directory, so the old ``dst`` is renamed
    aside first and deleted only after the new one is in place: an interruption leaves
    either the old or the new folder, never a partly deleted one.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
