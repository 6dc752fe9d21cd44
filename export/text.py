"""Raw text -> words (with character offsets), and the one line reader of every ``predict`` input.

The word splitter is the one training uses for raw sentences (``xdistil.data.readers``
imports it from here), so a deployed model sees words cut exactly as in training.
Pure Python + ``regex``: no torch.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator

import regex

# Words are runs of letters and digits with their combining marks (Indic vowel signs,
# Arabic harakat), keeping inner apostrophes, hyphens and dots ("isn't", "3.5"); every other
# visible character is a token of its own, one whole grapheme cluster each, so an emoji flag,
# a skin tone or a ZWJ family ("👨‍👩‍👧") stays one token instead of several that would each get a tag.
# Format characters (Unicode Cf: zero-width (non-)joiners, direction marks, soft hyphens) are
# invisible: between two letters they belong to the word (Persian "می‌خواهم" is one word), anywhere
# else to no word, so a stray U+200F never becomes a word a model could tag B-PER. U+200B (zero
# width space) is the one that separates words (Thai, Khmer), never joins them.
_CORE = r"[\p{L}\p{N}\p{M}]"
_RUN = rf"[\p{{L}}\p{{N}}](?:{_CORE}|(?:(?!\u200b)\p{{Cf}})+(?={_CORE}))*"
WORD_PATTERN = rf"{_RUN}(?:['’\-.]{_RUN})*|(?=[^\s\p{{Cf}}])\X"
WORD_RE = regex.compile(WORD_PATTERN)

_EOL = re.compile(r"\r\n|\r|\n")  # line ends: LF, CRLF and a lone CR (old Mac exports)
_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")  # bytes that did not decode, kept by errors="surrogateescape"


def split_words(text: str) -> list[str]:
    """Unicode-aware word tokenizer for raw sentences (all scripts; punctuation split off)."""
    return WORD_RE.findall(text)


def split_words_with_offsets(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """`split_words` plus each word's ``(start, end)`` character offsets: ``text[start:end] == word``."""
    words, spans = [], []
    for m in WORD_RE.finditer(text):
        words.append(m.group())
        spans.append(m.span())
    return words, spans


class LineError(ValueError):
    """A line that cannot be read (bytes that are not UTF-8, corrupt gzip data): ``file:line: reason``."""

    def __init__(self, name: str, line: int, reason: str):
        self.name, self.line, self.reason = name, line, reason
        super().__init__(f"{name}:{line}: {reason}")


def read_lines(path: str | os.PathLike | None = None) -> Iterator[str]:
    """The lines of a file (``None`` or ``"-"``: stdin), streamed, without their line ends.

    The one reader of every ``predict`` input (and, through `numbered_lines`, of the training
    data readers): UTF-8, gzip detected by its magic bytes (not by name), a leading BOM
    dropped, and LF, CRLF or a lone CR each end a line. A problem raises `LineError` (a
    `ValueError`) naming ``file:line`` (bytes that are not UTF-8, with their column; corrupt
    gzip data); a directory or a missing file raises `OSError` up front.
    """
    for _, line in numbered_lines(path):
        yield line


def numbered_lines(path: str | os.PathLike | None = None) -> Iterator[tuple[int, str]]:
    """`read_lines` with each line's number (from 1)."""
    stdin = path is None or str(path) == "-"
    name = "stdin" if stdin else str(path)
    if not stdin and os.path.isdir(path):
        raise IsADirectoryError(21, "is a directory, expected a text file", name)
    raw = sys.stdin.buffer if stdin else open(path, "rb")  # noqa: SIM115 -- closed below
    text = None
    n = 0
    try:
        if not hasattr(raw, "peek"):
            raw = io.BufferedReader(raw)
        gz = raw.peek(2)[:2] == b"\x1f\x8b"
        text = io.TextIOWrapper(gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw, encoding="utf-8",
                                errors="surrogateescape", newline=None)  # newline=None: \r\n, \r, \n -> \n
        try:
            for n, line in enumerate(text, 1):
                line = line[:-1] if line.endswith("\n") else line
                if n == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                if bad := _NOT_UTF8.search(line):
                    byte = ord(bad.group()) - 0xDC00
                    raise LineError(name, n, f"not UTF-8 text (byte {byte:#04x} at column {bad.start() + 1})")
                yield n, line
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise LineError(name, n + 1, f"corrupt or truncated gzip data ({e})") from None
    finally:
        if text is not None:
            try:
                text.detach()  # never let the wrapper close stdin
            except ValueError:
                pass
        if not stdin:
            raw.close()


def iter_text_lines(lines: Iterable[str]) -> Iterator[str]:
    """One text per line (line ends and a leading BOM removed); blank lines are kept as ``""``.

    A lone CR inside an item ends a line too, so lines read by any means split alike.
    """
    first = True
    for chunk in lines:
        parts = _EOL.split(chunk)
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # the item's own line end
        for line in parts:
            yield line[1:] if first and line.startswith("\ufeff") else line
            first = False


def iter_conll_words(lines: Iterable[str], name: str = "input") -> Iterator[list[str]]:
    """Sentences (word lists) of a CoNLL or token-per-line file: first column, blank line between.

    Columns are tab-separated, or whitespace-separated when a line has no tab; other
    columns (e.g. gold tags) are ignored and ``-DOCSTART-`` lines skipped. A blank first
    column (``" \tO"``) raises `LineError` at ``name:line``: it would be an empty word.
    """
    words: list[str] = []
    for n, line in enumerate(iter_text_lines(lines), 1):
        if not line.strip():
            if words:
                yield words
                words = []
            continue
        word = line.split("\t")[0].strip() if "\t" in line else line.split()[0]
        if not word:
            raise LineError(name, n, f"blank word (only whitespace before the tab): {line!r}")
        if not word.startswith("-DOCSTART-"):
            words.append(word)
    if words:
        yield words


# The last column of a CoNLL line: a tag of some scheme (O, B-PER, S-LOC, b-per) or a bare type (PER).
_TAG = re.compile(r"^(?:[OoBbIiEeSsLlUu]-\S+|[Oo]|[A-Z][A-Z_]{1,15})$")


def looks_like_conll(lines: Iterable[str]) -> bool:
    """Whether text lines look like CoNLL columns (``word<TAB>tag``): every non-blank line has a
    tab, a first column of one word and a last column that looks like a tag. Texts from a
    spreadsheet ("id<TAB>a sentence") do not."""
    rows = [line.split("\t") for line in lines if line.strip()]
    return bool(rows) and all(
        len(r) >= 2 and r[0].strip() and len(r[0].split()) == 1 and _TAG.match(r[-1].strip()) for r in rows)
