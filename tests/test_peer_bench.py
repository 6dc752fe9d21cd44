"""The peer benchmark (benchmarks/peer.py, issue 33 step 7): spaCy is trained on exactly what the
student learns from -- the teacher's tags on the transfer sentences it trains on, the gold budget
-- and never on the sentences the student's selection holds out."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import demo_grid, grid, peer  # noqa: E402


def test_iob2_repairs_what_a_teacher_may_say():
    assert peer.iob2(["I-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-LOC"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-LOC"]


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    run = tmp_path_factory.mktemp("peer") / "run"
    assert demo_grid.main(["selection", "--variants", "demo", "--seeds", "13", "--run", str(run), "--quick", "-q",
                           "--results", str(run / "results")]) == 0
    return run


def test_spacy_trains_on_what_the_student_trains_on(cell):
    from xdistil.labeling import load_transfer, scan_transfer
    from xdistil.runner import outputs
    from xdistil.stages import held_out

    o = outputs(cell / "control" / "demo-s13")
    select_size = grid.Grid.load(demo_grid.CONFIG).config("control", quick=grid.QUICK).distill.select_size
    train, dev = peer.training_rows(o.transfer, select_size)
    ds, manifest = load_transfer(o.transfer)
    _, split = scan_transfer(ds)
    held, _ = held_out(ds, split, select_size)
    assert held and len(dev) == len(split["val"])
    assert len(train) == len(split["labeled"]) + len(split["transfer"]) - len(held)
    words = {tuple(w) for w, _ in train}
    assert not any(tuple(ds[i]["words"]) in words for i in held)
    labels = manifest["labels"]
    row = ds[split["transfer"][0]] if split["transfer"][0] not in held else ds[split["transfer"][1]]
    assert (row["words"], [labels[t] for t in row["t0_tags"]]) in [(list(w), t) for w, t in train]


def test_quick_peer_writes_the_peer_rows(cell, tmp_path):
    pytest.importorskip("spacy", reason="spaCy is the benchmark's peer, not an xdistil dependency")
    results = tmp_path / "results"
    assert peer.main(["--run", str(cell), "--cell", "demo-s13", "--out", str(tmp_path / "peer"), "--results",
                      str(results), "--quick", "-q"]) == 0
    rows = json.loads((results / "summary.json").read_text())["peer"]
    assert {r["test"] for r in rows} == {f"{lang}:{t}" for lang in ("de", "ar", "hi") for t in ("dev", "test")}
    assert {r["group"] for r in rows} == {"demo_grid/control"}
    assert all(0 <= r["spacy_silver_f1"] <= 100 and 0 <= r["student_f1"] <= 100 for r in rows)
    md = (results / "peer.md").read_text()
    assert "| test | teacher F1 | spaCy (silver) F1 |" in md and "## demo_grid/control (" in md  # and its machine


def test_peers_of_several_grids_share_one_summary(tmp_path):
    """Rows written before rows named their group stay, as the demo grid's; a group's rerun
    replaces only its own rows and protocol."""
    path = tmp_path / "summary.json"
    old = {"test": "de:dev", "spacy_silver_f1": 50.0, "student_f1": 60.0, "teacher_f1": 70.0}
    path.write_text(json.dumps({"rows": [], "peer": [old], "peer_protocol": {"cell": "demo-s13", "command": "x"}}))
    new = {"group": "sentences-fair/in", "test": "lv:dev", "spacy_silver_f1": 40.0, "student_f1": 45.0,
           "teacher_f1": 50.0}
    rows, protocols = peer.merge(path, "sentences-fair/in", [new], {"cell": "preset", "command": "y"})
    assert rows == [{"group": peer.LEGACY_GROUP, **old}, new]
    assert protocols == {peer.LEGACY_GROUP: {"cell": "demo-s13", "command": "x"},
                         "sentences-fair/in": {"cell": "preset", "command": "y"}}
    path.write_text(json.dumps({"peer": rows, "peer_protocol": protocols}))
    again, _ = peer.merge(path, peer.LEGACY_GROUP, [], {"cell": "demo-s14", "command": "z"})
    assert again == [new]
