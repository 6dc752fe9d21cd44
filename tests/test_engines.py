"""Labeling engines (xdistil.engines): the teacher in onnxruntime labels as the torch teacher does."""

import dataclasses
import json
import sys

import pytest
import torch
from conftest import REPO
from tiny import make_tiny_teacher, tiny_sentences

from xdistil import engines
from xdistil.config import RunConfig, TransferConfig, from_dict
from xdistil.taggers import load_tagger, word_logits

LAYERS = [1, 2]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDISTIL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"))


def _sentences():
    # short and long: the 300-word sentence is cut into several windows
    return tiny_sentences(30, seed=3) + [tiny_sentences(1, seed=4)[0] * 30]


def _run(tagger, module, sentences):
    return word_logits(dataclasses.replace(tagger, module=module), sentences, 8, hidden_layers=tuple(LAYERS))


def test_ort_matches_torch_and_outputs_only_the_stored_layers(teacher, cache, one_thread):
    tagger, sentences = load_tagger(teacher), _sentences()
    ref_logits, ref_hidden = _run(tagger, tagger.module, sentences)
    ort = engines.module(tagger, "ort", LAYERS, sentences)
    logits, hidden = _run(tagger, ort, sentences)
    assert [o.name for o in ort.session.get_outputs()] == ["logits", "hidden_1", "hidden_2"]
    assert len(logits) == len(sentences) and sorted(hidden) == LAYERS
    for a, b in zip(ref_logits, logits, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    for layer in LAYERS:
        for a, b in zip(ref_hidden[layer], hidden[layer], strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    ids = torch.tensor([[0, 5, 6, 2]])
    out = ort(ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool), output_hidden_states=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[0] is None  # 2 layers + embeddings; 0 not stored

    # exported once: a second engine on the same teacher and layers reads the cache
    graphs = list(cache.glob("engines/*/fp32/model.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    engines.module(tagger, "ort", LAYERS, sentences)
    assert graphs[0].stat().st_mtime_ns == stamp


def test_int8_runs_with_the_same_shapes(teacher, cache, one_thread):
    import onnx

    tagger, sentences = load_tagger(teacher), _sentences()
    ref_logits, ref_hidden = _run(tagger, tagger.module, sentences)
    q8 = engines.module(tagger, "ort-int8", LAYERS, sentences)
    logits, hidden = _run(tagger, q8, sentences)
    assert [a.shape for a in logits] == [b.shape for b in ref_logits]
    for layer in LAYERS:
        assert [a.shape for a in hidden[layer]] == [b.shape for b in ref_hidden[layer]]
    ops = {n.op_type for n in onnx.load(str(next(cache.glob("engines/*/int8-*/model.onnx")))).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}  # the weights are int8


def _label_cfg(tmp_path, **transfer):
    from synth import synth_files

    return from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 40, "val_size": 10,
                 "files": synth_files(tmp_path / "data", n_train=60, n_dev=10, n_unlabeled=30)},
        "transfer": {"layers": LAYERS, "chunk_size": 30, "batch_size": 16, **transfer},
        # fp32 on every CPU: auto takes bf16 where it is faster (an AVX-512 BF16 EPYC), and the
        # engines are compared with torch fp32 (the cached choices below were made for fp32)
        "precision": "fp32",
    })


def test_label_transfer_with_ort_gives_the_torch_set(teacher, cache, tmp_path, one_thread):
    from xdistil.labeling import label_transfer, load_transfer

    a = load_transfer(label_transfer(_label_cfg(tmp_path), [teacher], tmp_path / "torch", progress=False))
    b = load_transfer(label_transfer(_label_cfg(tmp_path, engine="ort"), [teacher], tmp_path / "ort",
                                     progress=False))
    (ds_a, man_a), (ds_b, man_b) = a, b
    assert ds_a.column_names == ds_b.column_names and len(ds_a) == len(ds_b) == 90
    assert man_a["engines"] == ["torch"] and man_b["engines"] == ["ort"]
    assert man_a["fingerprint"] != man_b["fingerprint"]  # another engine, another set
    check = man_b["engine_choice"][0]["check"]
    assert check["tag_agreement"] >= engines.MIN_AGREEMENT and check["max_abs_diff"] < 1e-4
    tags_a, tags_b = sum(ds_a["t0_tags"], []), sum(ds_b["t0_tags"], [])
    assert sum(x == y for x, y in zip(tags_a, tags_b, strict=True)) / len(tags_a) >= engines.MIN_AGREEMENT
    for col in ("t0_logits", "t0_h1", "t0_h2"):
        for x, y in zip(ds_a[col], ds_b[col], strict=True):
            assert all(abs(p - q) <= 1e-4 + 2e-3 * abs(p) for p, q in zip(x, y, strict=True))  # h: float16
    chunk = json.loads((tmp_path / "ort/chunks/xx-00000/xdistil_chunk.json").read_text())
    assert chunk["engines"] == ["ort"]


def test_engine_torch_keeps_the_old_digests(teacher, tmp_path, monkeypatch):
    """The fingerprint of a config that names engine torch is the one it had before the key
    existed (computed here with the key removed from the config); another engine, the default
    auto included, changes it."""
    from xdistil.run import fingerprints
    from xdistil.run.fingerprints import transfer_fields

    assert TransferConfig().engine == "auto" and transfer_fields(TransferConfig())["engine"] == "auto"
    assert "engine" not in transfer_fields(from_dict(TransferConfig, {"engine": "torch"}))
    assert transfer_fields(from_dict(TransferConfig, {"engine": "ort-int8"}))["engine"] == "ort-int8"
    cfg = _label_cfg(tmp_path, engine="torch")
    now = fingerprints.label(cfg, [teacher])["digest"]
    to_dict = fingerprints.to_dict

    def before_the_key(c):  # the transfer config as it was: no engine field at all
        d = to_dict(c)
        d.pop("engine", None)
        return d

    with monkeypatch.context() as m:
        m.setattr(fingerprints, "to_dict", before_the_key)
        assert fingerprints.label(cfg, [teacher])["digest"] == now
    for other in ("ort", "ort-int8", "auto"):
        assert fingerprints.label(_label_cfg(tmp_path, engine=other), [teacher])["digest"] != now
    assert fingerprints.label(_label_cfg(tmp_path), [teacher])["digest"] != now  # the default: auto


def test_auto_labels_a_small_set_in_torch_without_probing(teacher, cache, tmp_path, monkeypatch, one_thread):
    from xdistil.labeling import label_transfer

    def no_probe(*a, **k):
        raise AssertionError("a set under AUTO_MIN_SENTENCES is not probed")

    monkeypatch.setattr(engines, "probe", no_probe)
    out = label_transfer(_label_cfg(tmp_path), [teacher], tmp_path / "small", progress=False)  # 90 rows
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engines"] == ["torch"]
    choice = manifest["engine_choice"][0]
    assert choice["asked"] == "auto" and choice["resolved"] == "torch" and "90 transfer sentences" in choice["reason"]
    assert not (cache / "engines").exists()  # nothing exported


def test_choose_needs_agreement_and_a_margin():
    def fig(torch_s, ort_s, int8_s, int8_agree=1.0):
        return {"torch": {"sentences_per_s": torch_s, "tag_agreement": 1.0},
                "ort": {"sentences_per_s": ort_s, "tag_agreement": 1.0},
                "ort-int8": {"sentences_per_s": int8_s, "tag_agreement": int8_agree}}

    assert engines.choose(fig(100, 150, 300)) == "ort-int8"
    assert engines.choose(fig(100, 150, 300, int8_agree=0.98)) == "ort"  # int8 does not hold
    assert engines.choose(fig(100, 105, 108)) == "torch"  # under the 1.1x margin
    assert engines.choose(fig(300, 150, 200)) == "torch"


def test_auto_probes_picks_caches_and_records(teacher, cache, tmp_path, monkeypatch, one_thread):
    from xdistil.labeling import label_transfer

    speed = {"torch": 1.0, "ort": 0.5, "ort-int8": 0.25}  # seconds a probe pass: deterministic

    def timed(runs, rounds):
        assert set(runs) == set(speed)
        return {name: [speed[name]] * rounds for name in runs}

    monkeypatch.setattr(engines, "time_engines", timed)
    monkeypatch.setattr(engines, "AUTO_MIN_SENTENCES", 50)  # the 90-row set below is probed
    tagger = load_tagger(teacher)
    rec = engines.resolve(tagger, "auto", LAYERS, _sentences(), 16, "fp32")
    figures = rec["probe"]["engines"]
    assert figures["ort"]["tag_agreement"] >= engines.MIN_AGREEMENT
    assert figures["ort-int8"]["sentences_per_s"] == 4 * figures["torch"]["sentences_per_s"]
    assert rec["resolved"] == ("ort-int8" if figures["ort-int8"]["tag_agreement"] >= engines.MIN_AGREEMENT else "ort")
    assert rec["cached"] is False and rec["key"]

    def no_timing(runs, rounds):
        raise AssertionError("a cached choice is not measured again")

    monkeypatch.setattr(engines, "time_engines", no_timing)
    again = engines.resolve(tagger, "auto", LAYERS, _sentences(), 16, "fp32")
    assert again["cached"] is True and again["resolved"] == rec["resolved"]

    # labeling with auto: the cached choice labels, and the manifest says what was measured
    cfg = _label_cfg(tmp_path, engine="auto", batch_size=16)
    out = label_transfer(cfg, [teacher], tmp_path / "auto", progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engines"] == [manifest["engine_choice"][0]["resolved"]]
    assert manifest["engine_choice"][0]["asked"] == "auto" and "probe" in manifest["engine_choice"][0]

    # on another machine (no cache) auto picks torch: every chunk is labeled again, none mixed
    for f in (cache / "engines" / "choices").iterdir():
        f.unlink()
    speed.update({"torch": 0.1})
    monkeypatch.setattr(engines, "time_engines", timed)
    (out / "manifest.json").unlink()
    label_transfer(cfg, [teacher], out, progress=False)
    records = [json.loads(p.read_text()) for p in sorted(out.glob("chunks/*/xdistil_chunk.json"))]
    assert records and all(r["engines"] == ["torch"] for r in records)


def test_engines_off_the_cpu_or_for_students_and_clear_errors(teacher, cache, monkeypatch):
    tagger, sentences = load_tagger(teacher), _sentences()
    student = dataclasses.replace(tagger, kind="bilstm")
    assert engines.resolve(student, "auto", LAYERS, sentences, 8, "fp32")["resolved"] == "torch"
    with pytest.raises(engines.EngineError, match="Hugging Face teachers"):
        engines.resolve(student, "ort", LAYERS, sentences, 8, "fp32")
    assert engines.resolve(tagger, "auto", LAYERS, sentences, 8, "fp32", device="meta")["resolved"] == "torch"

    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(engines.EngineError, match="pip install onnxruntime") as e:
        engines.module(tagger, "ort", LAYERS, sentences)
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setenv("XDISTIL_CACHE", str(cache))

    class Untraceable(torch.nn.Module):
        def __init__(self, module, layers):
            super().__init__()

        def forward(self, input_ids, attention_mask):
            raise RuntimeError("this teacher does something the exporter cannot trace\nsecond line")

    monkeypatch.setattr(engines, "_Outputs", Untraceable)
    with pytest.raises(engines.EngineError, match="cannot be exported to ONNX") as e:
        engines.module(tagger, "ort", LAYERS, sentences)
    assert "\n" not in str(e.value) and "transfer.engine: torch" in str(e.value)
    assert not list(cache.glob("engines/*/fp32"))  # nothing half-built is left in the cache
    fallback = engines.resolve(tagger, "auto", LAYERS, sentences, 8, "fp32")  # the fastest that holds: torch
    assert fallback["resolved"] == "torch" and "cannot be exported" in fallback["reason"]


def test_benchmark_runs_on_a_tiny_teacher(teacher, cache, tmp_path, one_thread):
    import yaml

    if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
        sys.path.insert(0, str(REPO))
    from benchmarks import labeling as bench

    cfg = _label_cfg(tmp_path)
    raw = {"data": {"languages": ["xx"], "labeled_budget": 40, "val_size": 10, "files": cfg.data.files},
           "transfer": {"layers": LAYERS, "chunk_size": 20, "batch_size": 8}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(raw, default=str))))
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps({"rows": [1], "selection": [2]}))
    assert bench.main(["-q", "--teacher", str(teacher), "--transfer-config", str(tmp_path / "cfg.yaml"),
                       "--sentences", "30", "--rounds", "1", "--results", str(results)]) == 0
    summary = json.loads((results / "summary.json").read_text())
    assert summary["rows"] == [1] and summary["selection"] == [2]  # other keys kept
    rows = {r["engine"]: r for r in summary["labeling"]}
    assert set(rows) == {"torch-fp32", "torch-bf16", "ort-fp32", "ort-int8"}
    assert rows["torch-fp32"]["tag_agreement"] == 1.0 and rows["ort-fp32"]["tag_agreement"] >= engines.MIN_AGREEMENT
    assert all(r["sentences_per_s"] > 0 and r["sentences"] == 30 for r in rows.values())
    assert sum(r["auto_pick"] for r in rows.values()) == 1
    assert "Reproduce" in (results / "labeling.md").read_text()
