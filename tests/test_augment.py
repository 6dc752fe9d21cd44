"""Levers for transfer text closer to real documents (issue 17): augmentation operations
(`xdistil.augment`), fragments joined into longer sequences, other corpora's train text as
transfer text (never their dev/test), and all of it off by default."""

from __future__ import annotations

import random

import pytest
from synth import synth_files, synth_sentences, write_conll

from xdistil.augment import Augmentation, augment, capitalised_spans, code_mix, drop_words, recase, swap_spans
from xdistil.config import ConfigError, RunConfig, TransferConfig, from_dict
from xdistil.data.readers import DataError, Sentence
from xdistil.data.transfer import data_files, extra_source_paths, iter_transfer, join_fragments

SENTS = [["Angela", "Merkel", "besuchte", "gestern", "Paris", "."],
         ["the", "New", "York", "Times", "reported", "it"],
         ["ein", "kleiner", "satz", "ohne", "namen"],
         ["Berlin", "und", "Hamburg", "liegen", "im", "Norden"]] * 25


# ---- the operations ----------------------------------------------------------------------

def test_recase_each_mode():
    words = ["McDonald's", "in", "SÃO", "paulo"]
    assert recase(words, "lower") == ["mcdonald's", "in", "são", "paulo"]
    assert recase(words, "upper") == ["MCDONALD'S", "IN", "SÃO", "PAULO"]
    assert recase(words, "title") == ["Mcdonald's", "In", "São", "Paulo"]  # not str.title's "Mcdonald'S"
    with pytest.raises(ValueError, match="unknown case"):
        recase(words, "camel")


def test_drop_words_rate_and_floor():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    kept = drop_words(words, 0.25, rng)
    assert 0.70 < len(kept) / len(words) < 0.80
    it = iter(words)
    assert all(w in it for w in kept)  # a subsequence: order kept, nothing new
    assert drop_words(words, 0.0, rng) == words
    for _ in range(20):  # everything dropped: one word of the sentence stays
        one = drop_words(["a", "b", "c"], 1.0, rng)
        assert len(one) == 1 and one[0] in "abc"


def test_swap_spans_entity_then_context():
    a, b = ["yesterday", "Angela", "Merkel", "spoke"], ["the", "New", "York", "Times", "said", "so"]
    assert capitalised_spans(a) == [(1, 3)] and capitalised_spans(b) == [(1, 4)]
    a2, b2 = swap_spans(a, b, random.Random(0))
    assert a2 == ["yesterday", "New", "York", "Times", "spoke"]  # whole runs trade places
    assert b2 == ["the", "Angela", "Merkel", "said", "so"]
    # no capitalised run in one of them: one lower-case word each trades places instead
    c = ["ein", "satz", "ohne", "namen", "."]
    a3, c3 = swap_spans(a, c, random.Random(1))
    assert len(a3) == len(a) and len(c3) == len(c)
    assert sum(x != y for x, y in zip(a, a3, strict=True)) == 1 and sum(x != y for x, y in zip(c, c3, strict=True)) == 1
    assert {x for x in a3 if x not in a} <= set(c) and "." in c3  # punctuation never moves
    assert swap_spans(["1", "."], ["2", "!"], random.Random(0)) == (["1", "."], ["2", "!"])


def test_code_mix_joins():
    assert code_mix(["a", "b"], ["c"]) == ["a", "b", "c"]


def _run(aug, sents=SENTS, partner=None):
    return [(w, ops) for _, w, ops in augment(((i, s) for i, s in enumerate(sents)), aug, "de", partner)]


def test_augment_is_deterministic_and_off_by_default():
    aug = Augmentation(case=0.3, dropout=0.1, swap=0.5, code_mix=0.2, seed=7)
    partner = [["other", "language"]] * 100
    first, again = _run(aug, partner=iter(partner)), _run(aug, partner=iter(partner))
    assert first == again
    assert first != _run(Augmentation(case=0.3, dropout=0.1, swap=0.5, code_mix=0.2, seed=8), partner=iter(partner))
    assert len(first) == len(SENTS)  # one for one
    assert {op for _, ops in first for op in ops} == {"swap", "mix", "drop", "lower", "upper", "title"}
    assert not Augmentation().active and not Augmentation.from_transfer(TransferConfig()).active
    assert _run(Augmentation()) == [(s, []) for s in SENTS]


def test_each_rate_does_what_it_says():
    cased = _run(Augmentation(case=1.0))
    for (w, ops), s in zip(cased, SENTS, strict=True):
        mode = next(o for o in ("lower", "upper", "title") if o in ops) if ops else None
        assert w == (recase(s, mode) if mode else s) and len(w) == len(s)
    mixed = _run(Augmentation(code_mix=1.0), partner=iter([["x", "y"]] * len(SENTS)))
    assert all(w == s + ["x", "y"] and ops == ["mix"] for (w, ops), s in zip(mixed, SENTS, strict=True))
    swapped = _run(Augmentation(swap=1.0))
    for k in range(0, len(SENTS), 2):  # every pair trades words: both change, no word lost or new
        (a, ops_a), (b, ops_b) = swapped[k], swapped[k + 1]
        assert "swap" in ops_a and "swap" in ops_b and (a, b) != (SENTS[k], SENTS[k + 1])
        assert sorted(a + b) == sorted(SENTS[k] + SENTS[k + 1])
    assert any("New" in w for w, _ in swapped[::2])  # an entity run from the other sentence
    dropped = _run(Augmentation(dropout=0.5))
    assert all(len(w) < len(s) for (w, ops), s in zip(dropped, SENTS, strict=True) if "drop" in ops)


# ---- fragments joined ------------------------------------------------------------------

def _frag(n, length):
    return [Sentence([f"s{i}w{j}" for j in range(length)]) for i in range(n)]


def test_join_fragments_respects_k_and_the_word_limit():
    frags = _frag(10, 3) + [Sentence([f"long{j}" for j in range(12)])] + _frag(4, 3)
    joined = list(join_fragments(frags, 3, 10))
    assert [w for s in joined for w in s.words] == [w for s in frags for w in s.words]  # nothing lost or cut
    assert all(len(s.words) <= 10 for s in joined if not s.words[0].startswith("long"))
    assert [len(s.words) for s in joined] == [9, 9, 9, 3, 12, 9, 3]
    assert [len(s.words) for s in join_fragments(frags, 3, 7)][:3] == [6, 6, 6]  # the limit binds first
    assert list(join_fragments(frags, 1, 10)) == frags


def _cfg(tmp_path, **transfer):
    files = synth_files(tmp_path / "data", n_train=80, n_unlabeled=30)
    return from_dict(RunConfig, {"data": {"languages": ["xx"], "labeled_budget": 30, "val_size": 10,
                                          "files": files}, "transfer": transfer})


def test_concat_in_the_transfer_set(tmp_path):
    plain = list(iter_transfer(_cfg(tmp_path), "xx"))
    joined = list(iter_transfer(_cfg(tmp_path, concat=4, concat_max_words=20), "xx"))
    assert [r for r in joined if r.split != "transfer"] == [r for r in plain if r.split != "transfer"]
    t_plain, t_joined = [r for r in plain if r.split == "transfer"], [r for r in joined if r.split == "transfer"]
    assert [w for r in t_joined for w in r.words] == [w for r in t_plain for w in r.words]
    assert len(t_joined) < len(t_plain) / 2 and all(len(r.words) <= 20 for r in t_joined)
    limited = list(iter_transfer(_cfg(tmp_path, concat=4, concat_max_words=20, limit=5), "xx"))
    assert sum(r.split == "transfer" for r in limited) == 5  # the limit counts joined sequences


def test_augmented_transfer_set_leaves_gold_alone(tmp_path):
    cfg = _cfg(tmp_path, augment_case=0.5, augment_dropout=0.2, augment_swap=0.5)
    rows, again = list(iter_transfer(cfg, "xx")), list(iter_transfer(cfg, "xx"))
    assert rows == again
    plain = list(iter_transfer(_cfg(tmp_path), "xx"))
    assert [r for r in rows if r.split != "transfer"] == [r for r in plain if r.split != "transfer"]
    changed = [r for r in rows if "+" in r.source]
    assert changed and all(r.split == "transfer" and r.gold is None for r in changed)
    with pytest.raises(ConfigError, match="augment_case must be in"):
        from_dict(TransferConfig, {"augment_case": 1.5})
    with pytest.raises(ConfigError, match="concat"):
        from_dict(TransferConfig, {"concat": 0})


# ---- other corpora's train text, never dev/test -------------------------------------------

@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A data root with WikiANN pt train/dev and UNER pt train/dev/test (plain text under .gz names:
    the readers detect gzip by its bytes)."""
    monkeypatch.delenv("XDISTIL_DATA", raising=False)
    root = tmp_path / "root"
    for path, seed, n in (("wikiann/pt/train", 1, 60), ("wikiann/pt/dev", 2, 10), ("uner/pt/train", 3, 20),
                          ("uner/pt/dev", 4, 10), ("uner/pt/test", 5, 10)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        sents = [([f"{path.replace('/', '_')}{i}", *w], ["O", *t]) for i, (w, t) in enumerate(synth_sentences(n, seed))]
        write_conll(root / f"{path}.tsv.gz", sents)
    # Tatoeba-style raw text, a sentence a line (the registry's unlabeled pt source)
    (root / "tatoeba").mkdir()
    (root / "tatoeba/pt.txt.gz").write_text("".join(f"Frase {i} de Tatoeba , em Lisboa .\n" for i in range(15)))
    return root


def _pt(root, **transfer):
    return from_dict(RunConfig, {"data": {"languages": ["pt"], "root": str(root), "labeled_budget": 30,
                                          "val_size": 10},
                                 "transfer": {"sources": ["train_rest"], **transfer}})


def test_extra_sources_mix_train_text_never_dev_or_test(data_root):
    cfg = _pt(data_root, extra_sources={"pt": ["uner"]})
    assert extra_source_paths(cfg, "pt") == [data_root / "uner/pt/train.tsv.gz"]
    assert str(data_root / "uner/pt/train.tsv.gz") in data_files(cfg, "unlabeled")["pt"]  # in the fingerprint
    rows = [r for r in iter_transfer(cfg, "pt") if r.split == "transfer"]
    firsts = [r.words[0] for r in rows]
    assert sum(f.startswith("uner_pt_train") for f in firsts) == 20
    assert not any(f.startswith(("uner_pt_dev", "uner_pt_test", "wikiann_pt_dev")) for f in firsts)
    assert [f.split("_")[0] for f in firsts[:6]] == ["wikiann", "uner"] * 3  # one for one
    assert all("\t" not in w and w not in ("O", "B-PER") for r in rows for w in r.words)  # tags stripped
    # the other spellings of the same file; then every way of naming a held-out split is refused
    assert extra_source_paths(_pt(data_root, extra_sources={"pt": ["uner/pt/train"]}), "pt") == \
        extra_source_paths(_pt(data_root, extra_sources={"pt": [str(data_root / "uner/pt/train.tsv.gz")]}), "pt")
    for bad in ("uner/pt/dev", "uner/pt/test.tsv.gz", str(data_root / "wikiann/pt/dev.tsv.gz")):
        with pytest.raises(DataError, match="is a dev or test split"):
            extra_source_paths(_pt(data_root, extra_sources={"pt": [bad]}), "pt")
    with pytest.raises(DataError, match="neither a dataset"):
        extra_source_paths(_pt(data_root, extra_sources={"pt": ["nothing"]}), "pt")


def test_extra_sources_read_raw_sentences_by_dataset_name(data_root):
    """An unlabeled dataset of the registry (Tatoeba) is named like a labeled one, and its raw
    lines become whole sentences split into words, not one sentence of every line's first word."""
    cfg = _pt(data_root, extra_sources={"pt": ["tatoeba"]})
    assert extra_source_paths(cfg, "pt") == [data_root / "tatoeba/pt.txt.gz"]
    rows = [r for r in iter_transfer(cfg, "pt") if r.split == "transfer"]
    raw = [r.words for r in rows if r.words[0] == "Frase"]
    assert len(raw) == 15
    assert raw[0] == ["Frase", "0", "de", "Tatoeba", ",", "em", "Lisboa", "."]
    assert [r.words[0] == "Frase" for r in rows[:4]] == [False, True] * 2  # mixed one for one
    assert extra_source_paths(_pt(data_root, extra_sources={"pt": ["tatoeba/pt.txt.gz"]}), "pt") == \
        extra_source_paths(cfg, "pt")


def test_a_users_dev_file_is_refused(tmp_path):
    cfg = _cfg(tmp_path)
    dev = cfg.data.files["xx"]["dev"][0]
    bad = from_dict(RunConfig, {"data": {**cfg.data.__dict__}, "transfer": {"extra_sources": {"xx": [dev]}}})
    with pytest.raises(DataError, match="dev or test split"):
        list(iter_transfer(bad, "xx"))


def test_fingerprint_fields_leave_old_sets_alone():
    """With every lever off, the fields are the transfer config of before the levers (so a set
    labeled then keeps its digest once `label_fingerprint` uses them); a lever on is in them."""
    from xdistil.run.fingerprints import transfer_fields as fingerprint_fields

    before = {"sources", "hf", "limit", "layers", "chunk_size", "hidden_dtype"}
    torch = from_dict(TransferConfig, {"engine": "torch"})  # the engine sets were labeled with before the key
    assert set(fingerprint_fields(torch)) == before
    assert set(fingerprint_fields(TransferConfig())) == before | {"engine"}  # the default, auto, is another set
    on = fingerprint_fields(from_dict(TransferConfig, {"engine": "torch", "concat": 3, "augment_swap": 0.2}))
    assert set(on) == before | {"concat", "concat_max_words", "augment_case", "augment_dropout", "augment_swap",
                                "augment_code_mix", "augment_seed"}
    assert on["concat"] == 3 and on["augment_swap"] == 0.2
