"""The one place for atomic writes: files and folders appear whole or not at all.

Torch-free on purpose (this module ships with the runtime); ``xdistil`` imports it too,
so every JSON record, checkpoint, student, export and report is written the same way.

It is also the one place that decides what xdistil may delete, by record, never by name:

- every folder xdistil writes holds a record of the names it wrote there, ``xdistil_files.json``
  (`RECORD`): relative paths at every depth with their sizes, written last (`seal`; `replace_dir`
  seals every folder it swaps in). A folder still being written names ahead what it will write
  (`expect`), so half-finished work is provably xdistil's too;
- xdistil deletes or replaces a folder only when a record names everything in it (`unproven`,
  `check_own`, `remove_own`). A subfolder's own record counts only where its parent's record
  names the subfolder, so a copied stage or an export written inside a stage stays the user's.
  The temps of this module (``.NAME.XXXXXXXX.tmp``, ``.NAME.tmp-XXXXXXXX``, ``.NAME.old-XXXXXXXX``,
  the swap journal) are xdistil's only beside a ``NAME`` a record names. A folder with no record
  (a user's, or one written by an earlier xdistil) is refused in one line naming what is there
  (`NotOurs`), whatever its file names.

`replace_dir` survives a crash between its two renames: it writes a journal beside the target
first, and the next `repair` of that target (every entry point calls it) finishes the swap or
undoes it, and says which on stderr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

RECORD = "xdistil_files.json"
"""In every folder xdistil writes: the names it wrote there (see the module docstring)."""
FORMAT = "xdistil-files/1"
_JOURNAL_END = ".xdistil-swap.json"
SWAP = ".{}" + _JOURNAL_END
"""The journal `replace_dir` writes beside its target while it swaps (see `repair`)."""
KILL_ENV = "XDISTIL_KILL_AT_SWAP"
"""Test-only: SIGKILL this process at one point of `replace_dir`'s swap (`SWAP_POINTS`)."""
SWAP_POINTS = ("journal", "aside", "swapped", "deleted")

# What an interrupted write of this module leaves beside its target ``NAME``: `write_bytes`'
# ``.NAME.XXXXXXXX.tmp``, `atomic_dir`'s ``.NAME.tmp-XXXXXXXX``, `replace_dir`'s ``.NAME.old-XXXXXXXX``
# and journal, and a step's rebuild ``.NAME.xdistil-next`` (`xdistil.steps`).
_TEMP = re.compile(r"\.(?P<name>.+)\.(?:[a-z0-9_]{8}\.tmp|tmp-[a-z0-9_]{8}|old-[0-9a-f]{8}|xdistil-swap\.json"
                   r"|xdistil-next)")


class NotOurs(ValueError):
    """A folder holds entries xdistil did not write: it is neither deleted nor replaced."""


# ---- the record ------------------------------------------------------------------------------


def read_record(folder: str | os.PathLike) -> dict | None:
    """The record of ``folder`` (`RECORD`), or None when it has none (or it is unreadable)."""
    try:
        rec = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("entries"), dict) else None


def recorded(folder: str | os.PathLike) -> set[str]:
    """The names the record of ``folder`` lists directly in it (not deeper): set() without one."""
    rec = read_record(folder)
    return {n.split("/", 1)[0] for n in rec["entries"]} if rec else set()


def expect(folder: str | os.PathLike, names: Iterable[str]) -> Path:
    """Say, before writing them, that ``names`` (paths relative to ``folder``) are xdistil's: the
    record of a folder still being written, so half-finished work can be resumed or discarded
    without ever touching what a user put there. Creates ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):  # processes labeling side by side name their chunks in one record
        rec = read_record(folder) or {"format": FORMAT, "entries": {}}
        new = [str(n) for n in names if str(n) not in rec["entries"]]
        if new or rec.get("complete", True):
            entries = {**rec["entries"], **dict.fromkeys(new)}  # no size yet: not written
            write_json(folder / RECORD, {"format": FORMAT, "complete": False, "entries": entries})
    return folder


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (on the folder itself: no lock file to tell apart)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): only the deployment side runs there, one process
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def seal(folder: str | os.PathLike, whole: bool = False) -> dict:
    """Write the record of the finished ``folder``, last: every entry a record proves (``whole``:
    every entry, for a folder xdistil has just built privately), at every depth, with the size of
    each file (``None`` for a folder). Temps of ours are left out. Returns the entries."""
    folder = Path(folder)
    proven: dict[str, int | None] = {}
    _scan(folder, None if whole else {}, "", proven, [])
    write_json(folder / RECORD, {"format": FORMAT, "complete": True, "entries": proven})
    return proven


def _tree(paths: Iterable[str]) -> dict:
    """``["a/b", "c"]`` -> ``{"a": {"b": {}}, "c": {}}``: a name proves its parent folders too."""
    tree: dict = {}
    for p in paths:
        node = tree
        for part in str(p).split("/"):
            node = node.setdefault(part, {})
    return tree


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if k in out else v
    return out


def _own_tree(folder: Path) -> dict:
    rec = read_record(folder)
    return _tree(rec["entries"]) if rec else {}


def _scan(folder: Path, names: dict | None, rel: str, proven: dict, bad: list) -> None:
    """Sort what is under ``folder`` into ``proven`` (path -> size, None for a folder) and ``bad``
    (paths no record names). ``names``: the tree of names records above prove here; the
    folder's own record adds to it (it is reached only when the folder itself is proven).
    ``names=None``: everything is proven (a folder xdistil has just built)."""
    if names is not None:
        names = _merge(names, _own_tree(folder))
    for p in sorted(folder.iterdir()):
        if p.name == RECORD:
            continue
        r = rel + p.name
        temp = (m := _TEMP.fullmatch(p.name)) is not None and (names is None or m["name"] in names
                                                               or m["name"] == RECORD)
        if names is not None and p.name not in names and not temp:
            bad.append(r)
        elif temp:
            continue  # ours while the name it stands beside is; never recorded
        elif p.is_dir() and not p.is_symlink():
            proven[r] = None
            _scan(p, None if names is None else names[p.name], r + "/", proven, bad)
        else:
            proven[r] = p.lstat().st_size


_NOT_NAMED = object()


def _names_down(folder: Path, within: Path | None):
    """The tree of names that records from ``within`` down prove inside ``folder``: None when
    ``folder`` is a temp of ours (all of it is ours), `_NOT_NAMED` when no record names it."""
    if within is None:
        return {}
    names: dict = {}
    cur = Path(within)
    for part in folder.relative_to(within).parts:
        names = _merge(names, _own_tree(cur))
        if part not in names:
            m = _TEMP.fullmatch(part)
            return None if m is not None and m["name"] in names else _NOT_NAMED
        names, cur = names[part], cur / part
    return names


def unproven(folder: str | os.PathLike, within: str | os.PathLike | None = None) -> list[str]:
    """The paths under ``folder`` (relative to it) that no record names: what xdistil must never
    delete ([] for a missing folder). Proof starts at ``folder``'s own record, or with ``within``
    at the record of that ancestor, which must name ``folder`` itself (else ``[folder's name]``)."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return [] if not folder.exists() and not folder.is_symlink() else [folder.name]
    names = _names_down(folder, Path(within) if within is not None else None)
    if names is _NOT_NAMED:
        return [folder.name]
    bad: list[str] = []
    _scan(folder, names, "", {}, bad)
    return bad


def listing(names: list[str], most: int = 3) -> str:
    """``a, b, c and 4 more``: what a folder holds, short enough for a one-line error."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def not_ours(folder: str | os.PathLike, names: list[str], empty_needed: bool = False,
             unrecorded: bool = False) -> NotOurs:
    """The one-line refusal for a folder holding ``names`` that xdistil did not write
    (``unrecorded``: the folder has no record at all)."""
    if empty_needed:
        return NotOurs(f"{folder} is not empty ({listing(names)}) and holds no xdistil output; xdistil writes only "
                       f"into a new or empty folder, or one it made: pass another --out")
    if unrecorded:  # a user's folder, or one from an xdistil that wrote no records (the migration path)
        return NotOurs(f"{folder} holds {listing(names)} and no record of what xdistil wrote there ({RECORD}; "
                       f"folders from earlier xdistil releases have none): xdistil never deletes what no record "
                       f"names: move the folder away (or delete it yourself), or pass another --out")
    return NotOurs(f"{folder} holds {listing(names)}, which xdistil did not write and never deletes: move "
                   f"{'them' if len(names) > 1 else 'it'} away, or pass another --out")


def check_own(folder: str | os.PathLike, within: str | os.PathLike | None = None) -> None:
    """Raise `NotOurs` unless a record names everything in ``folder`` (see `unproven`); a file
    is refused too."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, expected a directory (pass another --out)")
    if names := unproven(folder, within):
        raise not_ours(folder, names, unrecorded=within is None and read_record(folder) is None)


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


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the finished folder ``src`` to ``dst``, replacing an existing ``dst``.

    ``src`` is sealed first (`seal`: every folder swapped in carries its record). ``os.replace``
    cannot overwrite a non-empty directory, so the old ``dst`` is renamed aside first and deleted
    only after the new one is in place; a journal beside ``dst`` (`SWAP`), written before the
    first rename, lets `repair` finish or undo a swap a crash interrupted. A ``dst`` that is a
    file, or holds anything its record does not name (`check_own`), is refused.
    """
    src, dst = Path(src), Path(dst)
    repair(dst)
    check_own(dst)
    if not (read_record(src) or {}).get("complete"):
        seal(src, whole=True)  # src is a folder the caller has just built: all of it is xdistil's
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    journal = dst.with_name(SWAP.format(dst.name))
    write_json(journal, {"format": FORMAT, "old": old.name, "new": os.path.relpath(src, dst.parent)})
    _kill_point("journal")
    os.replace(dst, old)
    _kill_point("aside")
    try:
        os.replace(src, dst)
    except OSError:
        os.replace(old, dst)  # put the previous folder back
        journal.unlink()
        raise
    _kill_point("swapped")
    shutil.rmtree(old)
    _kill_point("deleted")
    journal.unlink()


def _kill_point(point: str) -> None:
    """The fault seam of the swap: ``$XDISTIL_KILL_AT_SWAP=point`` SIGKILLs the process there,
    as a crash would (tests kill at each of `SWAP_POINTS`)."""
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def repair(dst: str | os.PathLike) -> str | None:
    """Finish or undo a `replace_dir` of ``dst`` that a crash interrupted (its journal is still
    there); say which in one line on stderr and return that line (None: nothing to repair).

    The new folder was complete when the journal was written, so the swap is finished whenever
    the new folder is still there -- unless ``dst`` is still in place and now holds something
    its record does not name: then the swap is dropped and ``dst`` stays as it is. With the new
    folder gone, the previous one is put back."""
    dst = Path(dst)
    journal = dst.with_name(SWAP.format(dst.name))
    try:
        rec = json.loads(journal.read_text(encoding="utf-8"))
        old, new = dst.parent / rec["old"], dst.parent / rec["new"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    there, aside, fresh = dst.exists(), old.is_dir(), new.is_dir()
    if fresh and there and not aside and unproven(dst):
        what = "was dropped (the folder now holds files xdistil did not write); it is as it was"
    elif fresh and not aside and there:  # killed before the first rename: do the swap now
        os.replace(dst, old)
        os.replace(new, dst)
        what = "was finished: the new folder is in place"
    elif fresh and not there:  # killed between the two renames
        os.replace(new, dst)
        what = "was finished: the new folder is in place"
    elif aside and not there:  # the new folder is gone: put the previous one back
        os.replace(old, dst)
        what = "was undone: the previous folder is back"
    else:  # killed after the second rename: only the previous folder is left to delete
        what = "was finished: the new folder is in place"
    if old.is_dir() and dst.exists():
        shutil.rmtree(old)
    journal.unlink(missing_ok=True)
    line = f"xdistil: {dst}: a replacement interrupted by a crash {what}"
    print(line, file=sys.stderr, flush=True)
    return line


def repair_under(folder: str | os.PathLike) -> list[str]:
    """`repair` ``folder`` and every folder under it whose swap a crash interrupted; the lines said."""
    folder = Path(folder)
    lines = [repair(folder)]
    if folder.is_dir():
        for j in sorted(folder.rglob(SWAP.format("*"))):
            lines.append(repair(j.with_name(j.name[1:-len(_JOURNAL_END)])))
    return [line for line in lines if line]


@contextmanager
def atomic_dir(dst: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``dst``; on success it replaces ``dst`` whole.

    ``with atomic_dir(out) as tmp: write files into tmp`` -- on an exception the temp
    folder is removed and ``dst`` is left as it was. See `replace_dir`.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_own(folder: str | os.PathLike, within: str | os.PathLike | None = None) -> None:
    """Delete ``folder`` -- after `check_own` proved that a record names everything in it
    (``within``: an ancestor whose record must name ``folder`` itself, see `unproven`)."""
    repair(folder)
    check_own(folder, within)
    if Path(folder).exists():
        shutil.rmtree(folder)
