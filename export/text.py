"""Raw text -> words (with character offsets), and the plain-text input formats of ``predict``.

The word splitter is the one training uses for raw sentences (``xdistil.data.readers``
imports it from here), so a deployed model sees words cut exactly as in training.
Pure Python + ``regex``: no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import regex

# Words are runs of letters and digits with their combining marks (Indic vowel signs,
# Arabic harakat), keeping inner apostrophes, hyphens and dots ("isn't", "3.5"); every
# other non-space character (punctuation, danda, symbols) is a token of its own.
WORD_PATTERN = r"[\p{L}\p{N}][\p{L}\p{N}\p{M}]*(?:['’\-.][\p{L}\p{N}][\p{L}\p{N}\p{M}]*)*|\S"
WORD_RE = regex.compile(WORD_PATTERN)


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


def iter_text_lines(lines: Iterable[str]) -> Iterator[str]:
    """One text per line (line ends and a leading BOM removed); blank lines are kept as ``""``."""
    for n, line in enumerate(lines):
        line = line.rstrip("\r\n")
        yield line[1:] if n == 0 and line.startswith("\ufeff") else line


def iter_conll_words(lines: Iterable[str]) -> Iterator[list[str]]:
    """Sentences (word lists) of a CoNLL or token-per-line file: first column, blank line between.

    Columns are tab-separated, or whitespace-separated when a line has no tab; other
    columns (e.g. gold tags) are ignored and ``-DOCSTART-`` lines skipped.
    """
    words: list[str] = []
    for line in iter_text_lines(lines):
        if not line.strip():
            if words:
                yield words
                words = []
            continue
        word = line.split("\t")[0].strip() if "\t" in line else line.split()[0]
        if not word.startswith("-DOCSTART-"):
            words.append(word)
    if words:
        yield words
