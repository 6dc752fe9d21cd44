"""Readers for labeled (CoNLL/IOB2) and unlabeled (token-per-line, raw text) files.

Every problem in a user's file is reported as a `DataError` naming the file and the
line, never as a bare traceback. Files may be gzipped (detected by magic bytes, not by
name), carry a UTF-8 BOM, or use CRLF line ends.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xdistil_export.text import split_words

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A problem in an input file, located at ``path:line``."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path, self.line, self.message = str(path), line, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


@dataclass
class Sentence:
    words: list[str]
    tags: list[str] | None = None  # None for unlabeled text
    where: str = ""  # "file:line" of the first word, for messages
    meta: dict = field(default_factory=dict)


@dataclass
class FileStats:
    sentences: int = 0
    tokens: int = 0
    tags: dict[str, int] = field(default_factory=dict)
    repaired: int = 0


def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text without line end), decoding UTF-8 strictly per line."""
    if not path.exists():
        raise DataError(path, None, "file not found")
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as fh:
            for n, bline in enumerate(io.BufferedReader(fh), start=1):  # type: ignore[arg-type]
                try:
                    line = bline.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(path, n, f"not valid UTF-8 (byte {bline[e.start]:#04x} at column {e.start + 1})") from None
                if n == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield n, line.rstrip("\r\n")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(path, None, f"cannot read file: {e}") from None


_IOB = re.compile(r"^(?:O|[BI]-(?P<type>[^\s]+))$")


def _check_tag(path, n, tag, tag_map, label_types) -> str:
    m = _IOB.match(tag)
    if not m:
        raise DataError(path, n, f"tag {tag!r} is not IOB2 (expected O, B-TYPE or I-TYPE)")
    typ = m.group("type")
    if typ is not None and tag_map and typ in tag_map:
        new = tag_map[typ]
        tag = "O" if new == "O" else f"{tag[0]}-{new}"
        typ = None if new == "O" else new
    if typ is not None and label_types is not None and typ not in label_types:
        raise DataError(
            path, n, f"tag {tag!r} is outside the label set (types: {', '.join(sorted(label_types))})"
        )
    return tag


def iter_conll(
    path: str | Path,
    label_types: Iterable[str] | None = None,
    tag_map: Mapping[str, str] | None = None,
    strict: bool = False,
    stats: FileStats | None = None,
) -> Iterator[Sentence]:
    """Stream sentences from a CoNLL file: one token per line, last column the tag.

    Columns are tab-separated, or whitespace-separated when a line has no tab. Blank
    lines end sentences; ``-DOCSTART-`` lines are skipped. ``tag_map`` renames entity
    types (``{"OTH": "O"}`` drops a type). An ``I-X`` that does not continue an ``X``
    entity is repaired to ``B-X`` with a warning, or raises under ``strict``.
    """
    path = Path(path)
    types = set(label_types) if label_types is not None else None
    stats = stats if stats is not None else FileStats()
    ncols: int | None = None
    words: list[str] = []
    tags: list[str] = []
    start = 0
    first_repair: str | None = None

    def flush() -> Sentence:
        stats.sentences += 1
        stats.tokens += len(words)
        for t in tags:
            stats.tags[t] = stats.tags.get(t, 0) + 1
        return Sentence(list(words), list(tags), f"{path}:{start}")

    for n, line in _open_lines(path):
        if not line.strip():
            if words:
                yield flush()
                words.clear()
                tags.clear()
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if cols[0].startswith("-DOCSTART-"):
            continue
        if len(cols) < 2:
            raise DataError(path, n, f"expected at least 2 columns (token and tag), found {len(cols)}: {line!r}")
        if ncols is None:
            ncols = len(cols)
        elif len(cols) != ncols:
            raise DataError(path, n, f"wrong column count: {len(cols)} columns, the file started with {ncols}")
        tag = _check_tag(path, n, cols[-1].strip(), tag_map, types)
        if tag.startswith("I-"):
            prev = tags[-1] if tags else "O"
            if prev == "O" or prev[2:] != tag[2:]:
                if strict:
                    raise DataError(path, n, f"{tag} follows {prev} (invalid IOB2; run without --strict to repair)")
                tag = "B-" + tag[2:]
                stats.repaired += 1
                first_repair = first_repair or f"{path}:{n}"
        if not words:
            start = n
        words.append(cols[0].strip() if "\t" in line else cols[0])
        tags.append(tag)
    if words:
        yield flush()
    if stats.sentences == 0:
        raise DataError(path, None, "empty file: no sentences found")
    if stats.repaired:
        log.warning("%s: repaired %d I- tags that did not continue an entity (first at %s)",
                    path, stats.repaired, first_repair)


def read_conll(path, label_types=None, tag_map=None, strict=False, limit: int | None = None,
               skip: int = 0, stats: FileStats | None = None) -> list[Sentence]:
    """Read a CoNLL file into memory; ``skip``/``limit`` select sentences [skip, skip+limit)."""
    out = []
    for i, s in enumerate(iter_conll(path, label_types, tag_map, strict, stats)):
        if i < skip:
            continue
        if limit is not None and len(out) >= limit:
            break
        out.append(s)
    return out


def read_tokens(path: str | Path, limit: int | None = None) -> Iterator[Sentence]:
    """Unlabeled token-per-line file (blank line between sentences); extra columns are ignored."""
    path = Path(path)
    words: list[str] = []
    start, count = 0, 0
    for n, line in _open_lines(path):
        if not line.strip():
            if words:
                yield Sentence(words, None, f"{path}:{start}")
                count += 1
                words = []
                if limit is not None and count >= limit:
                    return
            continue
        if not words:
            start = n
        words.append(line.split("\t")[0].strip() if "\t" in line else line.split()[0])
    if words:
        yield Sentence(words, None, f"{path}:{start}")
        count += 1
    if count == 0:
        raise DataError(path, None, "empty file: no sentences found")


# `split_words` (imported above) lives in `xdistil_export.text`, so that the torch-free
# runtime splits raw text exactly as training does.


def read_raw(path: str | Path, limit: int | None = None) -> Iterator[Sentence]:
    """One untokenized sentence per line, word-tokenized with `split_words`."""
    path = Path(path)
    count = 0
    for n, line in _open_lines(path):
        words = split_words(line)
        if words:
            yield Sentence(words, None, f"{path}:{n}")
            count += 1
            if limit is not None and count >= limit:
                return
    if count == 0:
        raise DataError(path, None, "empty file: no sentences found")


def read_file(path: str | Path, fmt: str, **kw) -> Iterator[Sentence]:
    """Dispatch on a registry/CLI format name: conll | tokens | raw."""
    if fmt == "conll":
        return iter_conll(path, **kw)
    if fmt == "tokens":
        return read_tokens(path, limit=kw.get("limit"))
    if fmt == "raw":
        return read_raw(path, limit=kw.get("limit"))
    raise ValueError(f"unknown data format {fmt!r} (expected conll, tokens or raw)")


def sniff_format(path: str | Path) -> str:
    """Guess conll / tokens / raw from the first non-blank lines of a file."""
    lines = []
    for _, line in _open_lines(Path(path)):
        if line.strip():
            lines.append(line)
        if len(lines) >= 20:
            break
    if not lines:
        raise DataError(path, None, "empty file: no sentences found")
    cols = [ln.split("\t") if "\t" in ln else ln.split() for ln in lines]
    widths = {len(c) for c in cols}
    taglike = sum(bool(_IOB.match(c[-1].strip())) for c in cols)
    if len(widths) == 1 and min(widths) >= 2 and taglike * 2 >= len(cols):
        return "conll"
    if all(len(ln.split()) == 1 for ln in lines):
        return "tokens"
    return "raw"


def load_hf_dataset(name: str, config: str | None, split: str, labels: list[str] | None = None,
                    limit: int | None = None, streaming: bool = False) -> Iterator[Sentence]:
    """Sentences from a Hugging Face dataset with ``tokens`` and (optionally) ``ner_tags``.

    ``unimelb-nlp/wikiann`` with the language code as config is the real loader for
    users with network access; a local dataset directory (``save_to_disk``) also works.
    """
    import datasets

    if Path(name).is_dir():
        ds = datasets.load_from_disk(name)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    names = None
    feat = ds.features.get("ner_tags") if ds.features else None
    if feat is not None and hasattr(feat, "feature") and hasattr(feat.feature, "names"):
        names = feat.feature.names
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        tags = None
        if "ner_tags" in row:
            raw = row["ner_tags"]
            tags = [names[t] if names and isinstance(t, int) else str(t) for t in raw]
        yield Sentence(list(row["tokens"]), tags, f"{name}[{config}/{split}]#{i}")
