"""Data layer: readers with file:line errors, data roots, word -> sub-word alignment."""

from xdistil.data.readers import DataError, Sentence, read_conll, read_raw, read_tokens, split_words

__all__ = ["DataError", "Sentence", "read_conll", "read_raw", "read_tokens", "split_words"]
