"""The one place for atomic writes: files and folders appear whole or not at all.

Torch-free on purpose (this module ships with the runtime); ``xdistil`` imports it too,
so every JSON record, checkpoint, student, export and report is written the same way.

It is also the one place that decides what xdistil may delete: only entries it can
prove it made (`foreign_entries`); a folder holding anything else is never replaced
(`NotOurs`, one line naming what is there).
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

# What an interrupted write of this module leaves beside its target: `write_bytes`'
# ``.NAME.XXXX.tmp``, `atomic_dir`'s ``.NAME.tmp-XXXX`` and `replace_dir`'s ``.NAME.old-XXXX``.
TEMP_PATTERNS = (".*.tmp", ".*.tmp-*", ".*.old-*")


class NotOurs(ValueError):
    """A folder holds entries xdistil did not write: it is neither deleted nor replaced."""


def owned(name: str, own: Iterable[str]) -> bool:
    """Whether an entry called ``name`` matches one of the globs ``own`` (or is a temp of ours)."""
    return any(fnmatch.fnmatchcase(name, p) for p in (*own, *TEMP_PATTERNS))


def foreign_entries(folder: str | os.PathLike, own: Iterable[str]) -> list[str]:
    """The names in ``folder`` that match none of the globs ``own``: entries xdistil cannot
    prove it made, which it must never delete ([] for a missing folder)."""
    folder, own = Path(folder), tuple(own)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not owned(p.name, own))


def recorded(record: str | os.PathLike) -> tuple[str, ...]:
    """The names a JSON record lists under ``entries`` (what a step wrote), as exact globs."""
    try:
        names = json.loads(Path(record).read_text(encoding="utf-8")).get("entries") or []
    except (OSError, ValueError, AttributeError):
        return ()
    return tuple(glob.escape(str(n)) for n in names)


def listing(names: list[str], most: int = 3) -> str:
    """``a, b, c and 4 more``: what a folder holds, short enough for a one-line error."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def not_ours(folder: str | os.PathLike, names: list[str], empty_needed: bool = False) -> NotOurs:
    """The one-line refusal for a folder holding ``names`` that xdistil did not write."""
    if empty_needed:
        return NotOurs(f"{folder} is not empty ({listing(names)}) and holds no xdistil output; xdistil writes only "
                       f"into a new or empty folder, or one it made: pass another --out")
    return NotOurs(f"{folder} holds {listing(names)}, which xdistil did not write and never deletes: move "
                   f"{'them' if len(names) > 1 else 'it'} away, or pass another --out")


def check_own(folder: str | os.PathLike, own: Iterable[str]) -> None:
    """Raise `NotOurs` unless every entry of ``folder`` matches ``own``; a file is refused too."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, expected a directory (pass another --out)")
    if names := foreign_entries(folder, own):
        raise not_ours(folder, names)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder plus a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    """Atomic, human-readable JSON (indent 2, UTF-8, trailing newline)."""
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    return write_bytes(dst, Path(src).read_bytes())


def replace_dir(src: Path, dst: Path, own: Iterable[str] | None = None) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing an existing ``dst``.

    ``os.replace`` cannot overwrite a non-empty directory, so the old ``dst`` is renamed
    aside first and deleted only after the new one is in place: an interruption leaves
    either the old or the new folder, never a partly deleted one. A ``dst`` that is a file
    is refused; with ``own`` (globs), so is a ``dst`` holding anything else (`check_own`).
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"{dst}: is a file, expected a directory (pass another --out)")
    if own is not None:
        check_own(dst, own)
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(dst: str | os.PathLike, own: Iterable[str] | None = None) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``dst``; on success it replaces ``dst`` whole.

    ``with atomic_dir(out) as tmp: write files into tmp`` -- on an exception the temp
    folder is removed and ``dst`` is left as it was. ``own``: see `replace_dir`.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        replace_dir(tmp, dst, own)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_own(folder: str | os.PathLike, own: Iterable[str]) -> None:
    """Delete ``folder`` -- after `check_own` proved that every entry in it is xdistil's."""
    check_own(folder, own)
    if Path(folder).exists():
        shutil.rmtree(folder)
