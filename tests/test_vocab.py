"""Vocabulary reduction: seen words keep the teacher's exact segmentation."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from tiny import make_unigram_tokenizer, make_wordpiece_tokenizer, tiny_sentences, tiny_words
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from xdistil.vocab import (
    always_kept,
    count_pieces,
    reduce_tokenizer,
    seen_piece_ids,
    select_pieces,
    student_vocabulary,
)


@pytest.fixture(scope="module")
def teachers():
    return {"unigram": make_unigram_tokenizer(), "wordpiece": make_wordpiece_tokenizer()}


def _ids(tok, words):
    return tok(list(words), is_split_into_words=True)["input_ids"]


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
@pytest.mark.parametrize("keep_chars", [True, False])
def test_seen_sentences_tokenize_exactly_like_the_teacher(teachers, kind, keep_chars):
    teacher = teachers[kind]
    pool = tiny_sentences(400)
    rng = random.Random(1)
    for trial in range(6):  # several random "data sets", from tiny to most of the pool
        data = rng.sample(pool, k=[3, 10, 30, 60, 120, 300][trial])
        reduced, kept = reduce_tokenizer(teacher, seen_piece_ids(teacher, data), keep_chars=keep_chars)
        assert len(reduced) == len(kept) < len(teacher)
        for words in data:
            assert [kept[i] for i in _ids(reduced, words)] == _ids(teacher, words)


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
def test_kept_maps_new_ids_to_the_same_pieces_and_specials(teachers, kind):
    teacher = teachers[kind]
    reduced, kept = reduce_tokenizer(teacher, seen_piece_ids(teacher, tiny_sentences(20)))
    assert kept == sorted(set(kept))
    assert reduced.convert_ids_to_tokens(list(range(len(kept)))) == teacher.convert_ids_to_tokens(kept)
    for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        assert getattr(reduced, name) == getattr(teacher, name)
        assert kept[getattr(reduced, name + "_id")] == getattr(teacher, name + "_id")
    assert reduced.model_max_length == teacher.model_max_length
    if kind == "wordpiece":  # [CLS]/[SEP] sit after the pieces: the post-processor was renumbered
        assert reduced.cls_token_id < teacher.cls_token_id
        ids = _ids(reduced, ["ka"])
        assert ids[0] == reduced.cls_token_id and ids[-1] == reduced.sep_token_id
    # padding uses the renumbered pad id
    batch = reduced([["ka"], ["ka", "ri", "mo"]], is_split_into_words=True, padding=True)
    assert batch["input_ids"][0][-1] == reduced.pad_token_id


def test_unseen_words_fall_back_to_kept_pieces(teachers):
    teacher = teachers["wordpiece"]
    seen = seen_piece_ids(teacher, tiny_sentences(20))
    with_chars, _ = reduce_tokenizer(teacher, seen, keep_chars=True)
    bare, _ = reduce_tokenizer(teacher, seen, keep_chars=False)
    unseen = tiny_sentences(100, seed=7)  # other words over the same characters

    def unk_count(tok):
        return sum(_ids(tok, s).count(tok.unk_token_id) for s in unseen)

    # Without the character pieces many unseen WordPiece words collapse to [UNK].
    assert unk_count(with_chars) == 0 < unk_count(bare)


def test_unigram_keeps_the_unknown_score(tmp_path):
    """A dropped low-score character must not let an unknown node beat the teacher's path.

    Word "abcd" (Metaspace: "▁abcd"): the teacher's best path is ▁a + b + cd = -18.
    "▁abc" (score -0.5) is seen in another word. A naive vocabulary of the seen pieces
    only has min score -6, so the unknown score is -16 and ▁abc + <unk>(d) = -16.5 wins.
    """
    vocab = [("<unk>", 0.0), ("▁a", -6.0), ("b", -6.0), ("cd", -6.0), ("▁abc", -0.5)]
    vocab += [("d", -50.0), ("c", -50.0), ("▁", -50.0), ("a", -50.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    teacher = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    data = [["abcd"], ["abc"]]
    assert teacher.convert_ids_to_tokens(_ids(teacher, ["abcd"])) == ["▁a", "b", "cd"]
    seen = seen_piece_ids(teacher, data)

    naive = Tokenizer(models.Unigram([vocab[i] for i in sorted(seen | {0})], unk_id=0))
    naive.pre_tokenizer = pre_tokenizers.Metaspace()
    enc = naive.encode(["abcd"], is_pretokenized=True)
    assert enc.tokens[0] == "▁abc" and enc.ids[1] == 0  # <unk>: the trap is real

    reduced, kept = reduce_tokenizer(teacher, seen, keep_chars=False)
    assert len(kept) == len(seen) + 2  # <unk> and the lowest-scoring piece
    for words in data:
        assert [kept[i] for i in _ids(reduced, words)] == _ids(teacher, words)


def test_bpe_is_refused():
    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    with pytest.raises(NotImplementedError, match="BPE"):
        reduce_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tok), [0])


def test_out_of_range_seen_ids_are_refused(teachers):
    with pytest.raises(ValueError, match="outside"):
        reduce_tokenizer(teachers["unigram"], [10_000])


def test_seen_piece_ids_matches_one_by_one_encoding(teachers):
    teacher = teachers["unigram"]
    data = tiny_sentences(50) + [[]]  # an empty sentence is fine
    expected = {
        i
        for s in data
        if s
        for i in teacher(s, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    }
    assert seen_piece_ids(teacher, iter(data), chunk_size=7) == expected
    assert seen_piece_ids(teacher.backend_tokenizer, data) == expected  # a raw tokenizers.Tokenizer too


def test_reduced_tokenizer_round_trips_through_save_pretrained(teachers, tmp_path):
    teacher = teachers["unigram"]
    data = tiny_sentences(30)
    reduced, kept = reduce_tokenizer(teacher, seen_piece_ids(teacher, data))
    reduced.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(kept)
    for words in data:
        assert _ids(loaded, words) == _ids(reduced, words)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert (
        spec["model"]["type"] == "Unigram" and len(spec["model"]["vocab"]) == len(kept) - 1
    )  # <mask> is added


# ---------------------------------------------------------------- the vocabulary budget


def two_languages():
    """A large language over Latin syllables and a small one over Cyrillic / Greek ones."""
    latin = tiny_sentences(1500, seed=3, vocab=[w for w in tiny_words(800, seed=3) if w.isascii()])
    rng = random.Random(5)
    other = [["".join(rng.choice(["ду", "ми", "ра", "ко", "νε", "στ"]) for _ in range(3)) for _ in range(5)]
             for _ in range(12)]
    return latin + other, ["big"] * len(latin) + ["small"] * len(other)


def test_count_pieces_counts_every_occurrence_per_language(teachers):
    teacher = teachers["unigram"]
    data, langs = two_languages()
    counts = count_pieces(teacher, data, langs, sample_size=7, chunk_size=50)
    assert set(counts.counts) == {"big", "small"} and set(counts) == seen_piece_ids(teacher, data)
    for lang in ("big", "small"):
        mine = [s for s, g in zip(data, langs, strict=True) if g == lang]
        expected = Counter(i for s in mine for i in _ids(teacher, s)[1:-1])  # without <s> </s>
        assert {i: int(n) for i, n in enumerate(counts.counts[lang]) if n} == dict(expected)
        assert counts.words[lang] == sum(map(len, mine)) and counts.sample[lang] == mine[:7]


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
def test_capped_vocabulary_keeps_words_off_unk(teachers, kind):
    teacher = teachers[kind]
    data, langs = two_languages()
    assert not any(teacher.unk_token_id in _ids(teacher, s) for s in data)  # so UNK below is the cap's doing
    counts = count_pieces(teacher, data, langs)
    n_seen = len(reduce_tokenizer(teacher, counts)[1])
    n_base = len(always_kept(teacher, counts))
    for cap in (n_seen - 20, (n_seen + n_base) // 2, n_base):
        reduced, kept, report = student_vocabulary(teacher, counts, max_vocab=cap)
        assert len(reduced) == len(kept) == report["size"] <= cap < n_seen
        for words in data:
            student = [kept[i] for i in _ids(reduced, words)]
            assert teacher.unk_token_id not in student
            assert len(student) >= len(_ids(teacher, words))  # words break into more, shorter pieces
        assert all(v["student_unk_words"] == 0 for v in report["languages"].values())
    with pytest.raises(ValueError, match=f"max_vocab {n_base - 1} is below the {n_base} special"):
        select_pieces(teacher, counts, n_base - 1)


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
def test_every_language_keeps_its_share(teachers, kind):
    teacher = teachers[kind]
    data, langs = two_languages()
    counts = count_pieces(teacher, data, langs)
    base = always_kept(teacher, counts)
    cap = len(base) + 60
    budget = cap - len(base)

    def top(lang, n):  # the language's n most frequent pieces beyond the always-kept ones
        c = counts.counts[lang]
        return sorted((i for i in range(len(c)) if c[i] and i not in base), key=lambda i: (-c[i], i))[:n]

    fair = select_pieces(teacher, counts, cap, language_share=0.5)
    greedy = select_pieces(teacher, counts, cap, language_share=0.0)
    assert len(fair) == len(greedy) == cap and base <= fair
    q = int(budget * 0.5) // 2  # the guarantee: share x budget / languages pieces each, at least
    for lang in ("big", "small"):
        assert set(top(lang, q)) <= fair
    assert not set(top("small", q)) <= greedy  # by global frequency alone the small one loses
    small = student_vocabulary(teacher, counts, cap)[2]["languages"]["small"]
    small_greedy_kept = sum(counts.counts["small"][i] for i in greedy) / counts.counts["small"].sum()
    assert small["occurrences_kept"] > small_greedy_kept
    full = student_vocabulary(teacher, counts)[2]["languages"]["small"]
    assert full["student_pieces_per_word"] == full["teacher_pieces_per_word"]  # nothing dropped
    assert small["student_pieces_per_word"] > small["teacher_pieces_per_word"]


def test_report_lists_pieces_per_word_per_language(teachers):
    teacher = teachers["wordpiece"]
    data, langs = two_languages()
    counts = count_pieces(teacher, data, langs)
    cap = len(always_kept(teacher, counts)) + 30
    _, kept, report = student_vocabulary(teacher, counts, max_vocab=cap)
    assert report["max_vocab"] == cap < len(reduce_tokenizer(teacher, counts)[1]) and report["size"] == len(kept) and report["teacher_size"] == len(teacher)
    assert 0 < report["occurrences_kept"] < 1 and report["seen"] == len(counts.seen())
    reduced = student_vocabulary(teacher, counts, max_vocab=cap)[0]
    for lang, r in report["languages"].items():
        assert r["words"] == counts.words[lang] and r["sample_words"] <= r["words"]
        assert r["student_pieces_per_word"] > r["teacher_pieces_per_word"] >= 1
        sample = counts.sample[lang]
        for tok, key in ((teacher, "teacher_pieces_per_word"), (reduced, "student_pieces_per_word")):
            pieces = sum(len(_ids(tok, s)) - 2 for s in sample)  # without [CLS] [SEP]
            assert r[key] == pytest.approx(pieces / sum(map(len, sample)), abs=1e-4)
    assert student_vocabulary(teacher, counts)[2]["max_vocab"] is None
    assert student_vocabulary(teacher, counts.seen())[2] is None  # bare ids: no counts, no report
    with pytest.raises(TypeError, match="count_pieces"):
        student_vocabulary(teacher, counts.seen(), max_vocab=cap)
