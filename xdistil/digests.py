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
    return {**body, "digest": digest(body)}


def digest(obj) -> str:
    """16 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:16]


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


# Files a model folder is identified by besides its weights: what turns text into its inputs.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")

# Digests of files read in this process, by (path, size, mtime): the identity is the content,
# the key only spares rereading a 470 MB weights file for every step and stage of a run.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def cached_file_digest(path: str | os.PathLike) -> str:
    """`file_digest`, computed once per (path, size, modification time) in this process."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if (d := _DIGESTS.get(key)) is None:
        d = _DIGESTS[key] = file_digest(path)
    return d


def _model_identity(folder: Path) -> dict:
    """What a Hugging Face model folder computes: its label map and the bytes of its weights and
    tokenizer files. Names, times and a README do not count: a copy is the same model."""
    try:
        id2label = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("id2label")
    except (OSError, ValueError, AttributeError):
        id2label = None
    files = {}
    for f in sorted(q for q in folder.rglob("*") if q.is_file()):
        if f.suffix in _WEIGHT_SUFFIXES or f.name in _TOKENIZER_FILES:
            files[f.relative_to(folder).as_posix()] = cached_file_digest(f)
    return {"id2label": id2label, "files": files}


def folder_digest(folder: str | os.PathLike) -> str:
    """A folder used as an input (a teacher, a transfer set, a student): its step's digest
    when it has a fingerprint; a member of a fingerprinted group (a co-finetuned teacher)
    gets the group's digest and its own name; any other folder (a model from elsewhere) a
    digest of its content -- a model folder (config.json) of its label map, weights and
    tokenizer, another folder of every file -- so a copy or a ``touch`` keeps its identity."""
    p = Path(folder)
    if (d := digest_of(p)) is not None:
        return d
    if (d := digest_of(p.parent)) is not None:
        return f"{d}/{p.name}"
    return "content:" + content_digest(p)


def content_digest(folder: str | os.PathLike) -> str:
    """What a folder holds, whatever records it carries: a model folder (config.json) its label
    map, weights and tokenizer (`_model_identity`), another folder every file."""
    p = Path(folder)
    if (p / "config.json").is_file():
        return digest(_model_identity(p))
    return digest({f.relative_to(p).as_posix(): cached_file_digest(f) for f in sorted(p.rglob("*")) if f.is_file()})
