"""The transfer set: sources mixed, de-duplicated, budget and selection slice first."""

import datasets
from synth import synth_sentences, write_conll

from xdistil.config import RunConfig, from_dict
from xdistil.data.transfer import iter_transfer


def test_sources_mix_and_dedup(tmp_path):
    train = synth_sentences(50, 1)
    write_conll(tmp_path / "train.tsv", train)
    # token file repeats 5 train sentences (must be dropped) and adds 10 new ones
    new = synth_sentences(10, 7)
    write_conll(tmp_path / "more.tokens", train[:5] + new, with_tags=False)
    (tmp_path / "raw.txt").write_text("Ein ganz neuer Satz.\n" + " ".join(train[45][0]) + "\n", encoding="utf-8")
    hf_rows = [["hf", "only", "sentence"], list(new[0][0])]
    datasets.Dataset.from_dict({"tokens": hf_rows}).save_to_disk(str(tmp_path / "hf"))
    cfg = from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 20, "val_size": 5,
                 "files": {"xx": {"train": [str(tmp_path / "train.tsv")],
                                  "unlabeled": [str(tmp_path / "more.tokens"), str(tmp_path / "raw.txt")]}}},
        "transfer": {"hf": [{"name": str(tmp_path / "hf"), "split": "train"}]},
    })
    rows = list(iter_transfer(cfg, "xx"))
    splits = [r.split for r in rows]
    assert splits[:20] == ["labeled"] * 15 + ["val"] * 5
    assert rows[0].gold == train[0][1] and rows[20].gold is None
    keys = ["\x1f".join(r.words) for r in rows]
    assert len(keys) == len(set(keys))
    transfer = [r.words for r in rows if r.split == "transfer"]
    assert transfer[:30] == [w for w, _ in train[20:50]]  # train beyond the budget, tags stripped
    assert ["Ein", "ganz", "neuer", "Satz", "."] in transfer  # raw text, word-tokenized
    assert ["hf", "only", "sentence"] in transfer  # Hugging Face dataset
    # 30 train_rest + 10 new token sentences + 1 raw + 1 hf (the other hf row duplicates a token one)
    assert len(transfer) == 42

    limited = from_dict(RunConfig, {**{"data": cfg.data.__dict__}, "transfer": {"limit": 7}})
    assert sum(r.split == "transfer" for r in iter_transfer(limited, "xx")) == 7
