"""The transfer set: sources mixed, de-duplicated, budget and selection slice first."""

import json
import shutil

import datasets
import pytest
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


# ---- a labeled set on disk: chunk checksums, relabeling, never mixing teachers ----------

def _label_cfg(tmp_path, **transfer):
    from synth import synth_files

    return from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 40, "val_size": 10,
                 "files": synth_files(tmp_path / "data", n_train=60, n_dev=10, n_unlabeled=30)},
        "transfer": {"layers": [1], "chunk_size": 20, "batch_size": 16, **transfer},
    })


def _cells(path):
    """Every stored cell of a transfer set, as plain lists (to compare two sets exactly)."""
    from xdistil.labeling import load_transfer

    ds, _ = load_transfer(path)
    return ds.to_dict()


def test_damaged_chunk_is_named_and_relabeled(tmp_path):
    from tiny import make_tiny_teacher

    from xdistil.labeling import TransferSetError, label_transfer, load_transfer

    teacher = make_tiny_teacher(tmp_path)
    cfg = _label_cfg(tmp_path)
    out = label_transfer(cfg, [teacher], tmp_path / "set", progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chunks"] == [f"xx-{i:05d}" for i in range(5)]  # 90 sentences, 20 a chunk
    assert set(manifest["checksums"]) == set(manifest["chunks"]) and manifest["fingerprint"]
    before = _cells(out)

    for damage in ("truncate", "flip"):
        arrow = next((out / "chunks/xx-00001").glob("*.arrow"))
        data = bytearray(arrow.read_bytes())
        if damage == "truncate":
            arrow.write_bytes(bytes(data[: len(data) // 2]))
        else:  # same length, a few bytes in the middle of the column data changed
            mid = len(data) // 2
            data[mid : mid + 4] = bytes(b ^ 0xFF for b in data[mid : mid + 4])
            arrow.write_bytes(bytes(data))
        with pytest.raises(TransferSetError) as e:
            load_transfer(out)
        msg = str(e.value)
        assert "xx-00001" in msg and "\n" not in msg and "damaged" in msg
        stamps = {c: (out / "chunks" / c / "xdistil_chunk.json").stat().st_mtime_ns for c in manifest["chunks"]}
        label_transfer(cfg, [teacher], out, progress=False)  # the rerun repairs the one broken chunk
        assert _cells(out) == before
        again = {c: (out / "chunks" / c / "xdistil_chunk.json").stat().st_mtime_ns for c in manifest["chunks"]}
        assert [c for c in stamps if stamps[c] != again[c]] == ["xx-00001"]

    shutil.rmtree(out / "chunks/xx-00002")
    with pytest.raises(TransferSetError, match="xx-00002 is missing"):
        load_transfer(out)


def test_another_teacher_or_config_never_mixes(tmp_path, monkeypatch):
    from tiny import make_tiny_teacher

    import xdistil.labeling as labeling

    a, b = make_tiny_teacher(tmp_path / "a", seed=0), make_tiny_teacher(tmp_path / "b", seed=1)
    cfg = _label_cfg(tmp_path)
    fresh_b = _cells(labeling.label_transfer(cfg, [b], tmp_path / "fresh-b", progress=False))

    # teacher A is interrupted after two chunks; teacher B then labels the same folder
    real, calls = labeling.label_chunk, {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(labeling, "label_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        labeling.label_transfer(cfg, [a], tmp_path / "set", progress=False)
    monkeypatch.setattr(labeling, "label_chunk", real)
    out = labeling.label_transfer(cfg, [b], tmp_path / "set", progress=False)
    assert _cells(out) == fresh_b  # not one chunk of A's logits left
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["path"] for t in manifest["teachers"]] == [str(b)]

    # a finished set relabeled by A: every chunk is A's; then a smaller chunk size leaves no stale chunk
    fresh_a = _cells(labeling.label_transfer(cfg, [a], tmp_path / "fresh-a", progress=False))
    assert _cells(labeling.label_transfer(cfg, [a], out, progress=False)) == fresh_a
    wider = _label_cfg(tmp_path, chunk_size=45)
    labeling.label_transfer(wider, [a], out, progress=False)
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["xx-00000", "xx-00001"]
    assert _cells(out) == _cells(labeling.label_transfer(wider, [a], tmp_path / "fresh-wide", progress=False))
