"""Entity-aware augmentation of the transfer set (transfer.augment_entities = k): mentions
swapped for mentions of their type, words for words of their tag, the words between mentions
shuffled (`xdistil.augment`), the variants labeled by the teacher after the originals
(`xdistil.labeling`), and never a variant of a held-out selection sentence, nor one that took
a mention or a word from it, trained on."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.augment import (
    ENTITY_AUG_VERSION,
    EntityBank,
    EntityRates,
    augment_entities,
    entity_bank,
    entity_spans,
    entity_variant,
    entity_variants,
    words_key,
)
from xdistil.config import ConfigError, RunConfig, TransferConfig, from_dict

SENTS = [
    (["Angela", "Merkel", "visited", "Paris", "today"], ["B-PER", "I-PER", "O", "B-LOC", "O"]),
    (["Obama", "met", "the", "Siemens", "board", "in", "Berlin"], ["B-PER", "O", "O", "B-ORG", "O", "O", "B-LOC"]),
    (["New", "York", "is", "big"], ["B-LOC", "I-LOC", "O", "O"]),
]
MENTIONS_ONLY = EntityRates(mention=1.0, word=0.0, shuffle=0.0)
WORDS_ONLY = EntityRates(mention=0.0, word=1.0, shuffle=0.0)
SHUFFLE_ONLY = EntityRates(mention=0.0, word=0.0, shuffle=1.0)
NOTHING = EntityRates(mention=0.0, word=0.0, shuffle=0.0)


# ---- the pure functions --------------------------------------------------------------------

def test_spans_and_bank():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG", "I-ORG", "O", "I-PER"]) == [
        (0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC"), (5, 7, "ORG"), (8, 9, "PER")]  # a stray I-X opens one
    bank = entity_bank([*SENTS, SENTS[0]])  # a repeated sentence adds nothing new
    assert bank.mentions["PER"].items == [("Angela", "Merkel"), ("Obama",)]
    assert bank.mentions["LOC"].items == [("Paris",), ("Berlin",), ("New", "York")]
    assert bank.words["B-LOC"].items == ["Paris", "Berlin", "New"] and bank.words["I-PER"].items == ["Merkel"]
    assert "Paris" not in bank.words["O"].items and "visited" in bank.words["O"].items


def test_mentions_replaced_by_others_of_their_type():
    bank = entity_bank(SENTS)
    words, _ = SENTS[0]
    seen_locs = set()
    for seed in range(30):
        v = entity_variant(*SENTS[0], bank, random.Random(seed), MENTIONS_ONLY)
        # the only other PER mention, the O words where they were, another LOC mention
        assert v[:2] == ["Obama", "visited"] and v[-1] == "today", v
        loc = tuple(v[2:-1])
        assert loc in bank.mentions["LOC"].items and loc != ("Paris",)
        seen_locs.add(loc)
    assert seen_locs == {("Berlin",), ("New", "York")}  # drawn among all the others


def test_words_replaced_by_words_of_their_tag():
    bank = entity_bank(SENTS)
    for words, tags in SENTS:
        for seed in range(10):
            v = entity_variant(words, tags, bank, random.Random(seed), WORDS_ONLY)
            assert len(v) == len(words)
            for w, new, t in zip(words, v, tags, strict=True):
                assert new in bank.words[t].items
                # a word with another word of its tag in the bank is always replaced (p = 1)
                assert (new != w) == bank.words[t].has_other(w)
    assert entity_variant(*SENTS[0], bank, random.Random(0), WORDS_ONLY)[1] == "Merkel"  # the only I-PER word


def test_shuffles_keep_mentions_in_place():
    words = ["Yesterday", "in", "the", "morning", "Obama", "said", "that", "it", "rained"]
    tags = ["O"] * 4 + ["B-PER"] + ["O"] * 4
    bank = entity_bank([(words, tags)])
    changed = 0
    for seed in range(20):
        v = entity_variant(words, tags, bank, random.Random(seed), SHUFFLE_ONLY)
        assert v[4] == "Obama"
        assert sorted(v[:4]) == sorted(words[:4]) and sorted(v[5:]) == sorted(words[5:])
        changed += v != words
    assert changed == 20  # every variant differs (an unchanged one gets one change)


def test_an_unchanged_variant_gets_one_change():
    words, tags = SENTS[0]
    bank = entity_bank(SENTS)
    got = {tuple(entity_variant(words, tags, bank, random.Random(seed), NOTHING)) for seed in range(20)}
    # a mention first, when one can be replaced: one of them, the rest as it was
    assert got == {("Obama", "visited", "Paris", "today"), (*words[:3], "Berlin", "today"),
                   (*words[:3], "New", "York", "today")}
    # no other mention of either type: one word, for another of its tag
    no_mentions = EntityBank(words=entity_bank(SENTS).words)
    v = entity_variant(words, tags, no_mentions, random.Random(0), NOTHING)
    diff = [i for i, (a, b) in enumerate(zip(words, v, strict=True)) if a != b]
    assert len(diff) == 1 and v[diff[0]] in no_mentions.words[tags[diff[0]]].items
    # an empty bank: an O segment reordered; a sentence that allows nothing stays as it is
    shuffled = entity_variant(["a", "b", "c", "Obama"], ["O", "O", "O", "B-PER"], EntityBank(), random.Random(0), NOTHING)
    assert shuffled != ["a", "b", "c", "Obama"] and sorted(shuffled[:3]) == ["a", "b", "c"] and shuffled[3] == "Obama"
    assert entity_variant(["a", "a", "Obama"], ["O", "O", "B-PER"], EntityBank(), random.Random(0), NOTHING) == \
        ["a", "a", "Obama"]


def test_variants_are_deterministic_distinct_and_deduped():
    bank = entity_bank(SENTS)
    words, tags = SENTS[1]
    got = entity_variants(words, tags, bank, 5, 13, "xx:1")
    assert got == entity_variants(words, tags, bank, 5, 13, "xx:1")  # the same seed and key: the same variants
    got = [w for w, _ in got]
    assert 1 <= len(got) <= 4 and words not in got and len({tuple(v) for v in got}) == len(got)
    others = [entity_variants(w, t, bank, 5, 14, f"xx:{i}") for i, (w, t) in enumerate(SENTS)]
    assert others != [entity_variants(w, t, bank, 5, 13, f"xx:{i}") for i, (w, t) in enumerate(SENTS)]
    assert entity_variants(words, tags, bank, 1, 13, "xx:1") == []  # k = 1: none
    # one variant possible at all: k = 5 gives it once
    only = entity_bank([(["Obama", "spoke"], ["B-PER", "O"]), (["Merkel"], ["B-PER"])])
    assert entity_variants(["Obama", "spoke"], ["B-PER", "O"], only, 5, 13, "xx:0", MENTIONS_ONLY) == [
        (["Merkel", "spoke"], set())]  # a bank without origins: nothing to name
    # the stream drops what the set already holds, and what it gave before
    rows = [("a", ["Obama", "spoke"], ["B-PER", "O"])] * 2
    seen = {words_key(["Obama", "spoke"])}
    assert list(augment_entities(rows, only, 5, 13, "xx", set(seen), MENTIONS_ONLY)) == [
        ("a", ["Merkel", "spoke"], set())]
    assert list(augment_entities(rows, only, 5, 13, "xx", seen | {words_key(["Merkel", "spoke"])},
                                 MENTIONS_ONLY)) == []


def test_variants_name_the_sentences_they_took_from():
    bank = EntityBank()
    for i, (words, tags) in enumerate(SENTS):
        bank.add(words, tags, f"s{i}")
    bank.add(["Obama", "Paris"], ["B-PER", "B-LOC"], "late")  # nothing new: each value keeps its first origin
    assert bank.mentions["PER"].origins == ["s0", "s1"] and bank.mentions["LOC"].origins == ["s0", "s1", "s2"]
    for seed in range(20):  # Obama from s1, and Berlin from s1 or New York from s2
        took: set = set()
        v = entity_variant(*SENTS[0], bank, random.Random(seed), MENTIONS_ONLY, took)
        assert took == {"s1", {("Berlin",): "s1", ("New", "York"): "s2"}[tuple(v[2:-1])]}
    for seed in range(10):  # each word taken names the sentence that first held it
        words, tags = SENTS[2]
        took = set()
        v = entity_variant(words, tags, bank, random.Random(seed), WORDS_ONLY, took)
        assert took == {bank.words[t].origins[bank.words[t].index[new]]
                        for w, new, t in zip(words, v, tags, strict=True) if new != w}
    for seed in range(10):  # the one change made to an unchanged variant counts too
        took = set()
        v = entity_variant(*SENTS[0], bank, random.Random(seed), NOTHING, took)
        assert took == ({"s1"} if v[0] == "Obama" else {{("Berlin",): "s1", ("New", "York"): "s2"}[tuple(v[3:-1])]})
    took = set()  # a shuffle takes nothing from anyone
    words = ["a", "b", "c", "d", "e", "f", "Obama"]
    v = entity_variant(words, ["O"] * 6 + ["B-PER"], bank, random.Random(0), SHUFFLE_ONLY, took)
    assert v != words and sorted(v) == sorted(words) and took == set()
    # a sentence always trained on (origin None) is never named: its text cannot leak
    trained = EntityBank()
    trained.add(*SENTS[0])
    trained.add(*SENTS[1], "s1")
    took = set()
    assert entity_variant(["Obama"], ["B-PER"], trained, random.Random(0), MENTIONS_ONLY, took) == ["Angela", "Merkel"]
    assert took == set()


def test_config_field_is_checked_and_a_flag(capsys):
    assert TransferConfig().augment_entities == 1
    for bad in (0, -2):
        with pytest.raises(ConfigError, match="augment_entities") as e:
            from_dict(TransferConfig, {"augment_entities": bad}, "transfer")
        assert "\n" not in str(e.value)
    from xdistil.cli import main

    with pytest.raises(SystemExit):
        main(["label", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # the help is wrapped to the terminal
    assert "--transfer.augment_entities" in out and "variants of every transfer sentence" in out


def test_k1_keeps_the_label_fingerprint(tmp_path):
    from xdistil.run import fingerprints

    (tmp_path / "teacher").mkdir()

    def digest(**transfer):
        cfg = from_dict(RunConfig, {"data": {"languages": ["xx"]}, "transfer": transfer})
        return fingerprints.label(cfg, [tmp_path / "teacher"])["digest"]

    assert "augment_entities" not in fingerprints.transfer_fields(TransferConfig(augment_entities=1))
    # what augmented rows record is in the digest of k > 1 only (sets from before borrowed_from relabel)
    assert "entity_aug_version" not in fingerprints.transfer_fields(TransferConfig(augment_entities=1))
    assert fingerprints.transfer_fields(TransferConfig(augment_entities=3))["entity_aug_version"] == ENTITY_AUG_VERSION
    base = digest()
    assert digest(augment_entities=1) == base and digest(augment_entities=1, augment_seed=5) == base
    k3 = digest(augment_entities=3)
    assert len({base, k3, digest(augment_entities=2)}) == 3
    assert digest(augment_entities=3, augment_seed=5) != k3  # the seed now decides the variants


# ---- labeled by the teacher, end to end ----------------------------------------------------

def _cfg(tmp, teacher, k: int) -> RunConfig:
    return from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 40, "val_size": 10,
                 "files": synth_files(tmp / "data", n_train=60, n_dev=10, n_unlabeled=30)},
        "teacher": {"model": str(teacher), "max_length": 24},
        "transfer": {"layers": [1], "chunk_size": 20, "batch_size": 16, "augment_entities": k},
        "student": {"embedding_dim": 8, "hidden_dim": 8, "max_length": 24, "shape_dim": 0},
        "distill": {"stages": [{"name": "t", "losses": {"hard": 1.0}, "unfreeze": False, "epochs": 1,
                                "lr": 0.05, "batch_size": 16}],
                    "match": {"teacher_layer": 1}, "max_steps_per_epoch": 40, "select_size": 10},
        # fp32, as the test's own label_chunk: auto takes bf16 where a CPU runs it faster (AVX-512 BF16)
        "precision": "fp32",
    })


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    from xdistil.labeling import label_transfer

    tmp = tmp_path_factory.mktemp("entity-aug")
    teacher = make_tiny_teacher(tmp)
    return tmp, teacher, {k: label_transfer(_cfg(tmp, teacher, k), [teacher], tmp / f"k{k}", progress=False)
                          for k in (1, 3)}


def _rows(path):
    from xdistil.labeling import load_transfer

    ds, manifest = load_transfer(path)
    return ds.to_dict(), manifest


def test_k3_labels_variants_after_the_originals(sets):
    import numpy as np

    from xdistil.data.transfer import TransferRow
    from xdistil.labeling import label_chunk
    from xdistil.taggers import load_tagger

    tmp, teacher, paths = sets
    one, m1 = _rows(paths[1])
    three, m3 = _rows(paths[3])
    assert "aug_of" not in one and "borrowed_from" not in one  # k = 1: the set (and its digest) as before
    assert "augmented" not in m1["counts"]["xx"] and "entity_augmentation" not in m1
    n = len(one["words"])
    aug = [i for i, s in enumerate(three["source"]) if s.endswith("+entity-aug")]
    assert aug == list(range(n, len(three["words"])))  # after every original
    counts = m3["counts"]["xx"]
    assert counts["augmented"] == len(aug) and sum(counts.values()) == len(three["words"])
    transfer = counts["transfer"]
    assert transfer < len(aug) <= 2 * transfer  # up to k - 1 = 2 a transfer sentence, most of them kept
    assert m3["chunks"][: len(m1["chunks"])] == m1["chunks"]
    assert m3["chunks"][len(m1["chunks"]):] == [f"xx-aug-{i:05d}" for i in range(-(-len(aug) // 20))]
    # the originals are labeled as at k = 1; only the aug_of ("" on them) and borrowed_from ([]) columns are new
    assert {k: v[:n] for k, v in three.items() if k not in ("aug_of", "borrowed_from")} == one
    assert set(three["aug_of"][:n]) == {""} and not any(three["borrowed_from"][:n])
    # every variant: a transfer row without gold, of a transfer original, never a duplicate
    originals = {words_key(w).hex(): (w, s) for w, s, sp in zip(one["words"], one["source"], one["split"],
                                                                strict=True) if sp == "transfer"}
    by_key = {words_key(w).hex(): w for w in one["words"]}
    labeled = {w for ws, sp in zip(one["words"], one["split"], strict=True) if sp == "labeled" for w in ws}
    for i in aug:
        assert three["split"][i] == "transfer" and three["gold"][i] == [] and three["lang"][i] == "xx"
        w, source = originals[three["aug_of"][i]]
        assert three["source"][i] == f"{source}+entity-aug" and three["words"][i] != w
        # borrowed_from: other transfer originals, sorted, and every new word is from them or a labeled row
        took = three["borrowed_from"][i]
        assert took == sorted(set(took)) and set(took) <= originals.keys() - {three["aug_of"][i]}
        named = {x for k in took for x in by_key[k]}
        assert set(three["words"][i]) - set(w) <= named | labeled
    assert sum(map(bool, three["borrowed_from"][n:])) > len(aug) // 2  # most variants took from another row
    assert len({tuple(w) for w in three["words"]}) == len(three["words"])
    # the teacher's own labels of the new text
    rows = [TransferRow(three["words"][i], "xx", "transfer", None, "") for i in aug[:8]]
    again = label_chunk([load_tagger(teacher)], rows, m3["labels"], [1], 16, m3["hidden_dtype"])
    assert again["t0_tags"] == [three["t0_tags"][i] for i in aug[:8]]
    for got, i in zip(again["t0_logits"], aug[:8], strict=True):
        np.testing.assert_allclose(got, three["t0_logits"][i], atol=1e-5)


def test_a_rerun_reuses_the_chunks_and_remakes_the_same_variants(sets, tmp_path, monkeypatch):
    import xdistil.labeling as labeling

    tmp, teacher, paths = sets
    before, _ = _rows(paths[3])
    copy = tmp_path / "k3"
    shutil.copytree(paths[3], copy)
    (copy / "manifest.json").unlink()  # an interrupted run: no manifest, one augmented chunk lost
    shutil.rmtree(copy / "chunks" / "xx-aug-00001")
    real, calls = labeling.label_chunk, []

    def counted(teachers, rows, *a, **k):
        calls.append(len(rows))
        return real(teachers, rows, *a, **k)

    monkeypatch.setattr(labeling, "label_chunk", counted)
    labeling.label_transfer(_cfg(tmp, teacher, 3), [teacher], copy, progress=False)
    assert calls == [20]  # only the lost chunk, remade from the labeled originals alone
    assert _rows(copy)[0] == before


def test_no_variant_of_a_held_out_sentence_is_trained_on(sets, tmp_path, monkeypatch, one_thread):
    from xdistil import stages
    from xdistil.batching import TransferBatcher

    tmp, teacher, paths = sets
    trained: list[int] = []
    plan, held_out, held = TransferBatcher.plan, stages._held_out, []

    def recording(self, batches, *a, **k):  # every row a phase trains on
        trained.extend(r for b in batches for r in b)
        return plan(self, batches, *a, **k)

    def holding(*a, **k):
        held.extend(held_out(*a, **k))
        return held

    monkeypatch.setattr(TransferBatcher, "plan", recording)
    monkeypatch.setattr(stages, "_held_out", holding)
    stages.distill(_cfg(tmp, teacher, 3), paths[3], teacher, tmp_path / "k3", progress=False)
    log = json.loads((tmp_path / "k3" / "metrics.json").read_text())
    assert len(held) == log["selection"]["held_out_sentences"]["xx"] > 0 and trained
    three, _ = _rows(paths[3])
    one, _ = _rows(paths[1])
    from xdistil.data.transfer import selection_rows

    # the held-out slice: original transfer sentences, the very ones of the k = 1 set
    assert not any(three["aug_of"][i] for i in held) and {three["split"][i] for i in held} == {"transfer"}
    k1_held = selection_rows({"xx": [i for i, s in enumerate(one["split"]) if s == "transfer"]}, 10)["xx"]
    assert [three["words"][i] for i in held] == [one["words"][i] for i in k1_held]
    held_keys = {words_key(three["words"][i]).hex() for i in held}
    of_held = {i for i, a in enumerate(three["aug_of"]) if a in held_keys}
    assert of_held and not (of_held | set(held)) & set(trained)
    # variants of trained sentences that took a mention or a word from a held-out one: not trained on
    took_held = {i for i, b in enumerate(three["borrowed_from"]) if set(b) & held_keys} - of_held
    assert took_held and not took_held & set(trained)
    other_aug = {i for i, a in enumerate(three["aug_of"]) if a and a not in held_keys} - took_held
    assert other_aug & set(trained)  # the other variants are trained on


def _strip_borrowed_from(src, dst):
    """A copy of the set ``src`` as labeled before rows recorded ``borrowed_from``, checksums and all."""
    import datasets

    from xdistil.labeling import _checksums

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for c in manifest["chunks"]:
        folder, tmp = dst / "chunks" / c, dst / "chunks" / f"{c}.tmp"
        datasets.load_from_disk(str(folder)).remove_columns("borrowed_from").save_to_disk(str(tmp))
        record = json.loads((folder / "xdistil_chunk.json").read_text())
        shutil.rmtree(folder)
        tmp.rename(folder)
        record["files"] = manifest["checksums"][c] = _checksums(folder)
        (folder / "xdistil_chunk.json").write_text(json.dumps(record))
    (dst / "manifest.json").write_text(json.dumps(manifest))


def test_an_old_set_without_borrowed_from_still_loads(sets, tmp_path, caplog):
    from xdistil import stages
    from xdistil.labeling import load_transfer, scan_transfer

    _, _, paths = sets
    new, _ = load_transfer(paths[3])
    held, variants = stages.held_out(new, scan_transfer(new)[1], 10)
    _strip_borrowed_from(paths[3], tmp_path / "old")
    old, _ = load_transfer(tmp_path / "old")  # verified against its checksums, loads
    assert "borrowed_from" not in old.column_names and len(old) == len(new)
    with caplog.at_level("WARNING", logger="xdistil.stages"):
        held_old, variants_old = stages.held_out(old, scan_transfer(old)[1], 10)
        again = stages.held_out(old, scan_transfer(old)[1], 10)
    # as before: the same held-out rows, only the variants made from them left out, and one warning
    assert held_old == held and again == (held_old, variants_old)
    held_keys = {words_key(w).hex() for w in old.select(held)["words"]}
    assert variants_old == [i for i, a in enumerate(old["aug_of"]) if a in held_keys]
    assert set(variants_old) < set(variants)  # the new set also leaves out the variants that took from them
    warned = [r for r in caplog.records if "borrowed_from" in r.getMessage()]
    assert len(warned) == 1 and "relabel" in warned[0].getMessage() and str(tmp_path / "old") in warned[0].getMessage()


def test_the_protocol_counts_augmented_rows_apart():
    from xdistil.report import transfer_protocol

    counts = {"xx": {"labeled": 30, "val": 10, "transfer": 50}, "yy": {"labeled": 30, "val": 10, "transfer": 20}}
    assert transfer_protocol({"transfer": {"counts": counts}}) == "150 sentences (70 unlabeled + the labeled budget)"
    counts["xx"]["augmented"], counts["yy"]["augmented"] = 90, 30
    assert transfer_protocol({"transfer": {"counts": counts}}) == \
        "270 sentences (70 unlabeled + 120 entity-augmented variants + the labeled budget)"
