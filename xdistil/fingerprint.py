"""What a step was built from: one fingerprint file beside every step's output.

A fingerprint covers the resolved config fields the step depends on, the fingerprints
(digests) of its inputs -- teacher folders, a transfer set, data files -- and the
xdistil version. On a rerun:

- the same digest means the output on disk is this step's output: reuse it, and say so;
- another digest means the output was built from something else: recompute it (and every
  later step), or -- when the user asked only to resume -- refuse in one line that names
  the fields that differ (`StaleOutput`).

Half-finished work is tagged the same way (the fingerprint is written when a step
starts, in ``FILE_STARTED``), so work begun from other inputs is discarded, never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from xdistil_export.atomic import write_json

FILE = "xdistil_fingerprint.json"
"""Written when a step's output is complete."""
FILE_STARTED = "xdistil_fingerprint.started.json"
"""Written when a step starts writing into a folder (resumable, half-finished work)."""
FORMAT = "xdistil-fingerprint/1"


class StaleOutput(RuntimeError):
    """An output on disk was built from other inputs than the ones asked for now."""


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def make(step: str, fields: dict, inputs: dict[str, str | None] | None = None) -> dict:
    """A fingerprint record for ``step``: its config ``fields`` and its inputs' digests."""
    from xdistil import __version__

    body = {"format": FORMAT, "step": step, "xdistil": __version__, "fields": fields, "inputs": dict(inputs or {})}
    body = json.loads(_canonical(body))  # normalise tuples, paths, ... exactly as stored
    return {**body, "digest": hashlib.sha256(_canonical(body).encode()).hexdigest()[:16]}


def read(folder: str | os.PathLike, started: bool = False) -> dict | None:
    p = Path(folder) / (FILE_STARTED if started else FILE)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write(folder: str | os.PathLike, fp: dict, started: bool = False) -> None:
    write_json(Path(folder) / (FILE_STARTED if started else FILE), fp)


def digest_of(folder: str | os.PathLike) -> str | None:
    """The digest of a finished step's output (None: the folder has no fingerprint)."""
    fp = read(folder)
    return None if fp is None else fp.get("digest")


def file_digest(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes (for data files and chunks), first 16 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()[:16]


def diff(old: dict | None, new: dict) -> list[str]:
    """Dotted names of what differs between two fingerprints (fields.x, inputs.y, xdistil)."""
    if old is None:
        return ["(no fingerprint)"]
    out = []
    if old.get("step") != new.get("step"):
        out.append("step")
    if old.get("xdistil") != new.get("xdistil"):
        out.append("xdistil")
    for part in ("fields", "inputs"):
        a, b = _leaves(old.get(part) or {}, part), _leaves(new.get(part) or {}, part)
        out += [k for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]
    return out


_MISSING = object()


def _leaves(d: dict, prefix: str) -> dict:
    """Nested mappings flattened to dotted names (``fields.student.hidden_dim``); lists stay whole."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}.{k}"))
        else:
            out[f"{prefix}.{k}"] = v
    return out


def same(old: dict | None, new: dict) -> bool:
    return old is not None and old.get("digest") == new["digest"]


def stale_message(folder: str | os.PathLike, old: dict | None, new: dict) -> str:
    names = ", ".join(diff(old, new)) or "digest"
    return (f"{folder} was built from other inputs ({names} differ); "
            f"rerun without --resume-only to recompute it, or use another --out")


def folder_digest(folder: str | os.PathLike) -> str:
    """A folder used as an input (a teacher, a transfer set, a student): its step's digest
    when it has a fingerprint; a member of a fingerprinted group (a co-finetuned teacher)
    gets the group's digest and its own name; any other folder (a model from elsewhere) a
    digest of its files' names, sizes and modification times (cheap for gigabyte weights)."""
    p = Path(folder)
    if (d := digest_of(p)) is not None:
        return d
    if (d := digest_of(p.parent)) is not None:
        return f"{d}/{p.name}"
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "files:" + h.hexdigest()[:16]
