"""Readers for labeled (CoNLL/IOB2) and unlabeled (token-per-line, raw text) files.

Every problem in a user's file is reported as a `DataError` naming the file and the
line, never as a bare traceback. Files may be gzipped (detected by magic bytes, not by
name), carry a UTF-8 BOM, or use CRLF or lone-CR line ends. A file in a labeled role
(train, dev, evaluation) is always read as CoNLL; `sniff_format` guesses only where the
role is open (``data check`` without ``--format``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xdistil_export.text import LineError, numbered_lines, split_words

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
    """Yield (line number, text without line end) through the runtime's reader
    (`xdistil_export.text.numbered_lines`: UTF-8, gzip by its magic bytes, LF, CRLF or a lone
    CR), its problems raised as `DataError` at ``file:line``."""
    if not path.exists():
        raise DataError(path, None, "file not found")
    if path.is_dir():
        raise DataError(path, None, "is a directory, expected a file")
    try:
        yield from numbered_lines(path)
    except LineError as e:
        raise DataError(path, e.line, e.reason) from None
    except OSError as e:
        raise DataError(path, None, f"cannot read file: {e}") from None


_IOB = re.compile(r"^(?:O|[BI]-(?P<type>[^\s]+))$")


def _tag_hint(tag: str) -> str:
    """Why a tag is not IOB2, and the likely fix, for the error message."""
    if not tag:
        return "empty tag column (a trailing tab or space?)"
    if re.match(r"^[bi]-\S+$", tag, re.IGNORECASE) or tag == "o":
        fixed = "O" if tag == "o" else tag[0].upper() + tag[1:]
        return f"tag {tag!r}: the prefix must be upper case ({fixed!r})"
    if re.match(r"^[ESLU]-\S+$", tag):
        return f"tag {tag!r} is BIOES/BILOU, not IOB2 (convert it to O, B-TYPE, I-TYPE)"
    return f"tag {tag!r} is not IOB2 (expected O, B-TYPE or I-TYPE; a bare type like PER or PERSON needs B-/I-)"


def _check_tag(path, n, tag, tag_map, label_types) -> str:
    m = _IOB.match(tag)
    if not m:
        raise DataError(path, n, _tag_hint(tag))
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
            hint = " (a trailing tab?)" if len(cols) == ncols + 1 and not cols[-1].strip() else ""
            raise DataError(path, n, f"wrong column count: {len(cols)} columns, the file started with {ncols}{hint}")
        word = cols[0].strip() if "\t" in line else cols[0]
        if not word:  # " \tB-PER": a word nobody sees, that a model would still tag
            raise DataError(path, n, f"blank token (only whitespace before the tab): {line!r}")
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
        words.append(word)
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
        word = line.split("\t")[0].strip() if "\t" in line else line.split()[0]
        if not word:
            raise DataError(path, n, f"blank token (only whitespace before the tab): {line!r}")
        if not words:
            start = n
        words.append(word)
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


# A last column that looks like a tag of some tagging scheme, even a malformed one
# (PERSON, b-per, S-LOC): such lines are columns, never raw text.
_TAGGISH = re.compile(r"^(?:[OoBbIiEeSsLlUu]-\S+|[Oo]|[A-Z][A-Z_]{1,15})$")


def sniff_format(path: str | Path) -> str:
    """Guess conll / tokens / raw from the first non-blank lines of a file.

    Only for files whose role is open (``data check`` without ``--format``, unlabeled
    files): labeled roles always read CoNLL. Lines that look like columns (a tab, or a
    short line whose last field looks like a tag) make "conll", so a malformed labeled
    file gets the CoNLL reader's error instead of passing as raw text.
    """
    lines = []
    for _, line in _open_lines(Path(path)):
        if line.strip():
            lines.append(line)
        if len(lines) >= 20:
            break
    if not lines:
        raise DataError(path, None, "empty file: no sentences found")
    if any("\t" in ln for ln in lines):
        return "conll"
    fields = [ln.split() for ln in lines]
    columns = sum(2 <= len(f) <= 4 and bool(_TAGGISH.match(f[-1])) for f in fields)
    if columns * 2 >= len(lines):
        return "conll"
    if all(len(f) == 1 for f in fields):
        return "tokens"
    return "raw"


def _load_hub_dataset(name: str, config: str | None, split: str, streaming: bool):
    """``datasets.load_dataset`` that fails in a second or two, in one line, without a network."""
    import datasets

    from xdistil.data.roots import hub_offline_reason

    where = f"{name}[{config}/{split}]"
    flags = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    why = hub_offline_reason(flags)
    if why is not None and not any(why.startswith(f) for f in flags):  # no network: the cache needs the flag
        raise DataError(where, None, f"no local file, and {why}: pass your own files (--train/--dev, "
                                     "data.files) or a data root (data.root, $XDISTIL_DATA), or connect "
                                     "(HF_DATASETS_OFFLINE=1 reads the datasets cache)")
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as e:  # offline and not cached, a dataset or split that does not exist, ...
        first = (str(e).strip().splitlines() or [""])[0]
        hint = f" ({why}: pass local files or a data root, or connect)" if why else ""
        raise DataError(where, None, f"cannot load from the hub: {type(e).__name__}: {first}{hint}") from e


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
        ds = _load_hub_dataset(name, config, split, streaming)
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
