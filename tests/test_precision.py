"""Precision: `auto` resolves from the hardware, bf16 trains and labels, fp32 is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import make_tiny_teacher, tiny_sentences

from xdistil import precision as P
from xdistil.data.align import WindowEncoder, collate
from xdistil.data.transfer import TransferRow
from xdistil.labeling import label_chunk
from xdistil.taggers import load_tagger

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"), LABELS)


def _flags(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(P, "cpu_flags", lambda *a, **k: set(flags))


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n\n")
    assert {"avx512_bf16", "amx_tile", "sse2"} <= P.cpu_flags(info)
    assert P.cpu_flags(tmp_path / "missing") == set()
    # what a figure's provenance names beside the CPU: the flags that pick its kernels
    from xdistil import cpuinfo, provenance

    assert cpuinfo.vector_flags(info) == ["avx512f", "avx512_bf16"]  # amx_tile is not amx_bf16
    assert cpuinfo.cpu_model(info) == "Some CPU" and cpuinfo.cpu_model(tmp_path / "missing") == ""
    here = provenance.machine()
    assert here["vector_flags"] == cpuinfo.vector_flags() and set(here["vector_flags"]) <= set(cpuinfo.VECTOR_FLAGS)


@pytest.fixture
def calibration(monkeypatch, tmp_path):
    """A private calibration cache, and a fake `probe` whose bf16 speed-up the test sets."""
    monkeypatch.setenv("XDISTIL_CACHE", str(tmp_path))
    calls = []

    def fake_probe(work="encoder", **_):
        calls.append(work)
        speedup = calibration.speedup[work]
        return {"work": work, "fp32_ms": 10.0, "bf16_ms": 10.0 / speedup, "bf16_speedup": speedup,
                "choice": "bf16" if speedup >= P.MIN_SPEEDUP else "fp32"}

    calibration.speedup = {"encoder": 1.5, "bilstm": 1.5}
    calibration.calls = calls
    monkeypatch.setattr(P, "probe", fake_probe)
    return calibration


@pytest.mark.parametrize(("flags", "speedup", "expected"), [
    ({"avx512f", "avx512_bf16"}, 1.5, "bf16"),  # native and measured faster (the EPYC)
    ({"avx512f", "avx512_bf16"}, 0.8, "fp32"),  # native but measured slower (the Xeon of issue 32)
    ({"amx_tile", "amx_bf16"}, 1.5, "bf16"),
    ({"avx2", "avx512f"}, 1.5, "fp32"),  # bf16 would be emulated: not even measured
    (set(), 1.5, "fp32"),
])
def test_auto_on_cpu_is_measured_where_bf16_is_native(monkeypatch, calibration, flags, speedup, expected):
    _flags(monkeypatch, flags)
    calibration.speedup = {"encoder": speedup, "bilstm": speedup}
    assert P.resolve("auto", "cpu") == expected
    assert P.resolve("auto", torch.device("cpu")) == expected
    assert len(calibration.calls) == (1 if "avx512_bf16" in flags or "amx_bf16" in flags else 0)
    for explicit in ("fp32", "bf16", "fp16"):  # an explicit choice is kept, never measured
        assert P.resolve(explicit, "cpu") == explicit
    assert len(calibration.calls) <= 1


def test_calibration_is_cached_per_work_and_machine(monkeypatch, calibration, tmp_path):
    _flags(monkeypatch, {"avx512_bf16"})
    calibration.speedup = {"encoder": 0.7, "bilstm": 1.4}
    assert P.resolve("auto", "cpu", "encoder") == "fp32"
    assert P.resolve("auto", "cpu", "bilstm") == "bf16"
    assert P.resolve("auto", "cpu", "encoder") == "fp32"  # from the cache
    assert calibration.calls == ["encoder", "bilstm"]
    cache = __import__("json").loads((tmp_path / "precision.json").read_text())
    assert sorted(k.rsplit("| ", 1)[1] for k in cache) == ["bilstm", "encoder"]
    assert all(f"torch {torch.__version__}" in k and f"{torch.get_num_threads()} threads" in k for k in cache)
    # another thread count is another machine: measured again
    before = torch.get_num_threads()
    torch.set_num_threads(1 if before != 1 else 2)
    try:
        P.resolve("auto", "cpu", "encoder")
    finally:
        torch.set_num_threads(before)
    assert calibration.calls == ["encoder", "bilstm", "encoder"]
    # a damaged cache is measured anew, not an error; the record names the decision
    (tmp_path / "precision.json").write_text("{not json")
    record = P.choice_record("auto", "cpu", "bilstm")
    assert record["asked"] == "auto" and record["resolved"] == "bf16"
    assert record["calibration"]["bf16_speedup"] == 1.4 and "threads" in record["calibration"]["key"]
    assert P.choice_record("fp32", "cpu") == {"asked": "fp32", "resolved": "fp32"}
    # so is a CPU of the same name with other vector flags (an AVX2-only and an AVX-512 "AMD EPYC")
    n = len(calibration.calls)
    monkeypatch.setattr(P, "vector_flags", lambda: ["a-flag-no-cpu-has"])
    P.resolve("auto", "cpu", "encoder")
    assert calibration.calls[n:] == ["encoder"]


def test_the_real_probe_times_both_precisions_and_checks_accumulation():
    with pytest.raises(ValueError, match="encoder, bilstm"):
        P.probe("gru")
    if not P.cpu_has_bf16():  # e.g. an AVX2-only CPU: one clear line, not oneDNN's failure to build a bf16 LSTM
        with pytest.raises(ValueError, match="has no native bf16"):
            P.probe("bilstm", rounds=1, repeats=1)
        assert P.resolve("auto", "cpu") == "fp32"
        return
    out = P.probe("bilstm", rounds=1, repeats=1)
    assert out["fp32_ms"] > 0 and out["bf16_ms"] > 0 and out["choice"] in ("fp32", "bf16")
    assert out["bf16_speedup"] == pytest.approx(out["fp32_ms"] / out["bf16_ms"], rel=0.01)
    # products accumulate in fp32: the error stays within a small factor of rounding the inputs
    # (and of the bf16 output); accumulating in bf16 over K = 384 would be far larger
    assert 0 < out["input_rounding_rel_err"] and 0 < out["matmul_rel_err"] < 3 * out["input_rounding_rel_err"]


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert P.resolve("auto", "cuda") == expected
    if not bf16:
        with pytest.raises(ValueError, match="does not support bf16"):
            P.resolve("bf16", "cuda:0")


def test_other_devices_and_bad_values():
    assert P.resolve("auto", "meta") == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        P.resolve("int8", "cpu")
    with pytest.raises(ValueError, match="not resolved"):
        P.autocast("auto", "cpu")


def test_scaler_and_accelerate_strings():
    assert P.grad_scaler("fp32", "cpu") is None and P.grad_scaler("bf16", "cpu") is None
    assert isinstance(P.grad_scaler("fp16", "cpu"), torch.amp.GradScaler)
    assert [P.mixed_precision(p) for p in ("fp32", "bf16", "fp16")] == ["no", "bf16", "fp16"]


def _batch(tagger, n: int = 8) -> dict:
    enc = WindowEncoder(tagger.tokenizer, 24)
    pieces = enc.encode(tiny_sentences(n, seed=5))
    return collate(pieces, enc.specials.pad_id, [[i % len(LABELS) for i in range(len(s))]
                                                 for s in tiny_sentences(n, seed=5)])


def test_fp32_output_is_bitwise_unchanged(teacher_dir):
    model = load_tagger(teacher_dir).module.model.eval()
    b = _batch(load_tagger(teacher_dir))
    with torch.no_grad():
        plain = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        with P.autocast("fp32", "cpu"):
            wrapped = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        with P.autocast("bf16", "cpu"):
            low = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    assert torch.equal(plain.logits, wrapped.logits)
    assert all(torch.equal(a, c) for a, c in zip(plain.hidden_states, wrapped.hidden_states, strict=True))
    assert low.logits.dtype == torch.bfloat16  # the same context in bf16 does change the arithmetic
    assert not torch.equal(plain.logits, low.logits.float())


def test_bf16_trains_with_fp32_master_weights(teacher_dir):
    tagger = load_tagger(teacher_dir)
    model = tagger.module.model.train()
    b = _batch(tagger, 16)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(6):
        with P.autocast("bf16", "cpu"):
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        assert out.logits.dtype == torch.bfloat16
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(s.dtype == torch.float32 for st in opt.state.values() for s in st.values() if s.dim())
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def _rows(n: int = 12) -> list[TransferRow]:
    return [TransferRow(words, "xx", "transfer", None, "test") for words in tiny_sentences(n, seed=7)]


def test_bf16_labels_and_stores_todays_dtypes(teacher_dir):
    teachers = [load_tagger(teacher_dir)]
    rows = _rows()
    with torch.no_grad():
        default = label_chunk(teachers, rows, LABELS, [1], 4, "float16")
        fp32 = label_chunk(teachers, rows, LABELS, [1], 4, "float16", "fp32", "cpu")
        bf16 = label_chunk(teachers, rows, LABELS, [1], 4, "float16", "bf16", "cpu")
    for a, c in zip(default["t0_logits"], fp32["t0_logits"], strict=True):
        assert np.array_equal(a, c)  # fp32 labeling is the labeling of before, bit for bit
    for lg, h, r in zip(bf16["t0_logits"], bf16["t0_h1"], rows, strict=True):
        assert lg.dtype == np.float32 and lg.shape == (len(r.words) * len(LABELS),)
        assert h.dtype == np.float16 and h.size % len(r.words) == 0
    low = np.concatenate(bf16["t0_logits"])
    ref = np.concatenate(fp32["t0_logits"])
    assert np.isfinite(low).all() and not np.array_equal(low, ref)
    assert np.abs(low - ref).max() < 0.1  # bf16 keeps ~3 significant digits
    assert [len(t) for t in bf16["t0_tags"]] == [len(r.words) for r in rows]
