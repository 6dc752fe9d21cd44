"""Export a teacher or student to ONNX (+ int8), check it against PyTorch, write a self-contained folder.

Needs torch and transformers (imported only here, when exporting); the folder it
writes is read by the torch-free `xdistil_export.runtime.Predictor`.

The graph: ``input_ids`` and ``attention_mask`` (batch, sequence) int64 -> ``logits``
(batch, sequence, labels) float32, both axes dynamic. The word mask is not a graph
input: it is the first sub-word of every word, which the runtime computes itself from
the same windows as training (`xdistil_export.windows`). Exporter: the TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``), which handles all three model kinds
in torch 2.13: the BiLSTM student's ``pack_padded_sequence`` becomes the ONNX LSTM's
``sequence_lens`` input (padding never reaches the backward direction), and Hugging Face
encoders trace with their padding mask kept (we trace on a padded batch, so no
"no padding" shortcut can be frozen into the graph).

Parity, after every export: real sentences of several lengths (one of them longer than
the window, so it is windowed) run through PyTorch and onnxruntime at batch sizes 1, 3
and 8. Two comparisons, both over real (non-padding) positions only:

- sub-word: the ONNX session and the PyTorch module on the very same padded batches;
- word: the runtime `Predictor` on the export folder (its ``tokenizer.json``, windows,
  length-sorted batching) against ``xdistil.taggers.word_logits`` on the source model.

fp32 fails with `ExportParityError` when the max abs difference exceeds ``tolerance``.
int8 logits differ by design, so for int8 the max difference is only reported and the
export fails when fewer than ``int8_min_agreement`` of the word tags agree with PyTorch.
``int8`` uses onnxruntime dynamic quantization (int8 weights of MatMul / Gather / LSTM, not
Conv; activations quantized on the fly); the graph inputs keep their symbolic batch and
sequence axes (checked, and exercised by the parity batches). Dynamic quantization
picks one activation scale per tensor, i.e. per batch, so a word's int8 logits can shift
slightly with the other windows in its batch (the per-batch-size figures show it);
fp32 results do not depend on the batch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from xdistil_export.atomic import check_own, repair, replace_dir, write_json
from xdistil_export.runtime import MANIFEST, MODEL_FILES, TOKENIZER, Predictor, file_digests

from xdistil import digests, onnx_graph
from xdistil.cards import write_card, write_export_config
from xdistil.data.align import Specials, WindowEncoder
from xdistil.data.readers import read_conll
from xdistil.evaluate import score
from xdistil.provenance import versions
from xdistil.taggers import load_tagger, word_logits

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 3, 8)
INT8_MIN_AGREEMENT = 0.98
INT8_TARGET_MAX_DROP = 0.5  # F1 points on the dev file; reported, warned about, not enforced
WORD_MASK_CONTRACT = "first sub-word of each word, computed by the runtime from windows"

# Real sentences in several scripts and lengths (one word to a long paragraph).
PARITY_SENTENCES = [
    "Berlin",
    "Angela Merkel besuchte Paris .",
    "The United Nations opened an office in Nairobi , Kenya , in 1996 .",
    "Владимир Набоков родился в Санкт-Петербурге .",
    "ذهب أحمد إلى القاهرة مع فريق الأمم المتحدة .",
    "महात्मा गांधी का जन्म पोरबंदर में हुआ था ।",
    "東京 は 日本 の 首都 です 。",
    "Le musée du Louvre , à Paris , accueille la Joconde de Léonard de Vinci depuis le XIXe siècle , "
    "et l' Organisation des Nations unies y a tenu plusieurs réunions .",
    "La Universidad de Buenos Aires fue fundada en 1821 ; hoy Jorge Luis Borges da nombre a una de "
    "sus bibliotecas y la ciudad recibe visitantes de Montevideo , Santiago y Lima .",
    "Microsoft Research",
    "Στην Αθήνα , ο Περικλής μίλησε στην Εκκλησία του Δήμου .",
]


class ExportParityError(RuntimeError):
    """The exported model does not reproduce the PyTorch model; ``figures`` has the numbers."""

    def __init__(self, message: str, figures: dict):
        super().__init__(f"{message}: {json.dumps(figures)}")
        self.figures = figures


class LogitsOnly(nn.Module):
    """The graph's contract: (input_ids, attention_mask) -> logits; word_mask is not needed for logits."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.module(input_ids, attention_mask, attention_mask.bool()).logits  # (B, T, C)


def export_model(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    int8: bool = False,
    opset: int = 17,
    dev_file: str | os.PathLike | None = None,
    parity_sentences: Sequence[Sequence[str]] | None = None,
    tolerance: float = 1e-3,
    int8_min_agreement: float = INT8_MIN_AGREEMENT,
    command: str | None = None,
    record: dict | None = None,
) -> dict:
    """Export ``model_dir`` (teacher, student or any HF token classifier) into ``out_dir``.

    The folder is built in a temporary sibling and renamed into place only after the
    parity checks pass, so ``out_dir`` is never half-written, and a failed export leaves
    the previous one exactly as it was. An ``out_dir`` that is a file, or holds anything
    its record (`xdistil_export.atomic.RECORD`, written with every export) does not name, is
    refused before the work starts: a folder without one is not an export of ours, whatever
    its file names. ``record``: a step fingerprint (`xdistil.steps.export`) written into the
    folder before it is swapped in. ``parity_sentences`` (word
    lists) default to the first dev sentences plus `PARITY_SENTENCES`; a sentence longer
    than the model's window is always added. With ``dev_file`` (CoNLL), F1 of the fp32
    (and int8) export is recorded. The folder gets ``config.json`` (id2label) and a model
    card (`xdistil.cards`; ``command``: what made it, default the running command line).
    Returns the manifest.
    """
    out = Path(out_dir)
    repair(out)  # a swap a crash interrupted is finished or undone first
    check_own(out)  # before the work, not only at the swap
    tagger = load_tagger(model_dir)
    if tagger.scheme is not None and tagger.scheme.name == "IO":
        # its B- or I- is decided from the previous word over the sentence (`taggers.word_logits`),
        # which the exported graph (one position at a time) cannot do: the runtime would tie them
        raise ValueError(f"{model_dir}: its labels have no B-/I- prefixes (the IO scheme), "
                         "so it cannot be exported to ONNX; distil a student from it and export the student")
    specials = Specials.of(tagger.tokenizer)
    dev = _read_dev(dev_file, tagger.labels) if dev_file is not None else None
    sentences = _parity_set(tagger, specials, parity_sentences, dev)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _save_tokenizer(tagger.tokenizer, tmp / TOKENIZER)
        manifest = {
            "format": "xdistil-onnx-export",
            "format_version": 1,
            "source": str(Path(model_dir).resolve()),
            "kind": tagger.kind,
            "params": tagger.param_count(),
            "labels": list(tagger.labels),
            "max_length": int(tagger.max_length),
            "specials": {"cls_id": specials.cls_id, "sep_id": specials.sep_id,
                         "pad_id": specials.pad_id, "unk_id": specials.unk_id},
            "inputs": {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]},
            "outputs": {"logits": ["batch", "sequence", "labels"]},
            "word_mask": WORD_MASK_CONTRACT,
            "opset": opset,
            "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
            "files": {"model": MODEL_FILES["fp32"], "model_int8": None, "tokenizer": TOKENIZER},
            "parity": None,
            "int8": None,
            "dev": None,
            "versions": versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_manifest(tmp, manifest)  # the runtime reads it during the checks below

        wrapper = LogitsOnly(tagger.module).eval()
        windows = _parity_windows(tagger, sentences)
        export_graph(wrapper, _trace_batch(windows, specials.pad_id), tmp / MODEL_FILES["fp32"], opset)
        reference, _ = _torch_word_logits(tagger, sentences)

        # One onnxruntime thread: with PyTorch's pool in the same process, two spinning
        # thread pools fought over the cores and made the checks tens of times slower on a
        # busy small machine. The checks run small batches; one thread is plenty.
        fp32 = Predictor(tmp, "fp32", threads=1)
        parity = _parity(fp32, wrapper, windows, sentences, reference, specials.pad_id)
        parity.update(tolerance=tolerance, sentences=len(sentences), windows=len(windows),
                      longest_sentence_words=max(len(s) for s in sentences))
        manifest["parity"] = parity
        if parity["max_abs_diff"] > tolerance:
            raise ExportParityError(f"ONNX (fp32) logits differ from PyTorch by more than {tolerance}", parity)
        log.info("fp32 parity: max abs diff %.2e over %d windows", parity["max_abs_diff"], len(windows))

        q8 = None
        if int8:
            manifest["files"]["model_int8"] = MODEL_FILES["int8"]
            _write_manifest(tmp, manifest)
            quantize_int8(tmp / MODEL_FILES["fp32"], tmp / MODEL_FILES["int8"])
            q8 = Predictor(tmp, "int8", threads=1)
            p8 = _parity(q8, wrapper, windows, sentences, reference, specials.pad_id)
            p8["min_tag_agreement"] = int8_min_agreement
            manifest["int8"] = {
                "method": "onnxruntime.quantization.quantize_dynamic (QInt8 weights)",
                "parity": p8,
                "size_bytes": (tmp / MODEL_FILES["int8"]).stat().st_size,
                "fp32_size_bytes": (tmp / MODEL_FILES["fp32"]).stat().st_size,
            }
            if p8["min_agreement"] < int8_min_agreement:
                raise ExportParityError(
                    f"int8 tags agree with PyTorch on fewer than {int8_min_agreement:.0%} of the words", p8
                )
            log.info("int8 parity: tag agreement %.4f, max abs diff %.3f", p8["min_agreement"], p8["max_abs_diff"])

        if dev is not None:
            manifest["dev"] = _dev_scores(dev, dev_file, fp32, q8)
        # SHA-256 of the model and tokenizer files: the runtime refuses a file changed since (issue 24)
        manifest["sha256"] = file_digests(tmp, manifest["files"])
        _write_manifest(tmp, manifest)
        write_export_config(tmp, manifest)  # id2label / label2id, for code that reads HF-style configs
        write_card(tmp, command=command)
        if record is not None:
            write_json(tmp / digests.FILE, record)
        del fp32, q8  # release the model files before the rename
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        replace_dir(tmp, out)  # sealed there; checked again: files put into out meanwhile are not deleted
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# ---- pieces of the export ---------------------------------------------------------------


def _save_tokenizer(tokenizer, path: Path) -> None:
    """The fast tokenizer's backend as a ``tokenizers`` JSON, without padding/truncation state."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError("export needs a fast (tokenizers-backed) tokenizer")
    tok = Tokenizer.from_str(backend.to_str())
    tok.no_truncation()  # a window never exceeds the limit; truncation would drop pieces
    tok.no_padding()
    tok.save(str(path))


def export_graph(wrapper: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path, opset: int) -> None:
    """Trace ``wrapper`` (a `LogitsOnly`) on the padded ``example`` (input_ids, attention_mask)
    into the ONNX file ``path`` with dynamic batch and sequence axes, checked (`onnx_graph.trace`)."""
    onnx_graph.trace(wrapper, example, path, opset, ["logits"])


def quantize_int8(src: Path, dst: Path) -> None:
    """The int8 graph of ``src`` (dynamic quantization of the weights, QInt8) into ``dst``, checked.

    Every op onnxruntime quantizes dynamically except Conv: its ConvInteger ran the CNN student
    3.7-5.6x slower than fp32 (benchmarks/results/latency/cnn); our CNN exports its
    convolutions as MatMuls anyway (`xdistil.students.cnn.conv_last`)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    onnx_graph.quantize(src, dst, op_types_to_quantize=sorted(set(IntegerOpsRegistry) - {"Conv"}))


def _parity_set(tagger, specials, given, dev) -> list[list[str]]:
    """Parity sentences: given, or dev + built-ins; always one longer than the window."""
    if given is not None:
        sentences = [list(s) for s in given if len(s)]
    else:
        sentences = [s.words for s in (dev or [])[:24]] + [s.split() for s in PARITY_SENTENCES]
    if not sentences:
        raise ValueError("no parity sentences")
    max_pieces = tagger.max_length - specials.count
    backend = tagger.tokenizer.backend_tokenizer

    def n_pieces(words):
        return len(backend.encode(words, is_pretokenized=True, add_special_tokens=False).ids)

    if max(n_pieces(s) for s in sentences) <= max_pieces:
        long: list[str] = []
        pool = [w for s in sentences for w in s]
        while n_pieces(long) <= 2.5 * max_pieces:  # at least three windows
            long += pool
        sentences.append(long)
    return sentences


def _parity_windows(tagger, sentences) -> list[list[int]]:
    return [p.input_ids for p in WindowEncoder(tagger.tokenizer, tagger.max_length).encode(sentences)]


def _trace_batch(windows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real windows of different lengths, right-padded: the traced graph sees padding."""
    longest = max(windows, key=len)
    other = min(windows, key=len)
    if len(other) == len(longest):
        other = longest[: max(2, len(longest) // 2)]
    return _pad([longest, other], pad_id)


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[b, : len(r)] = 1
    return ids, mask


def _torch_word_logits(tagger, sentences):
    return word_logits(tagger, sentences, batch_size=max(BATCH_SIZES))


def _parity(predictor: Predictor, wrapper: nn.Module, windows, sentences, reference, pad_id) -> dict:
    """Sub-word (same padded batches) and word-level (runtime vs PyTorch) figures per batch size.

    ``reference``: PyTorch word logits per sentence; tag agreement is the share of words
    whose argmax matches it.
    """
    subword, word, agreement = {}, {}, {}
    ref_tags = [r.argmax(-1).numpy() for r in reference]
    n_words = sum(len(t) for t in ref_tags)
    for bs in BATCH_SIZES:
        diff = 0.0
        for lo in range(0, len(windows), bs):  # input order: mixed lengths, so padding
            ids, mask = _pad(windows[lo : lo + bs], pad_id)
            with torch.no_grad():
                expected = wrapper(ids, mask).float().numpy()  # (B, T, C)
            got = predictor.run(ids.numpy(), mask.numpy())  # (B, T, C)
            real = mask.numpy().astype(bool)
            diff = max(diff, float(np.abs(got[real] - expected[real]).max()))
        subword[str(bs)] = diff
        got_words = predictor.word_logits(sentences, batch_size=bs)
        word[str(bs)] = max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got_words, reference, strict=True))
        same = sum(int((g.argmax(-1) == t).sum()) for g, t in zip(got_words, ref_tags, strict=True))
        agreement[str(bs)] = same / n_words
    return {"batch_sizes": list(BATCH_SIZES), "words": n_words,
            "max_abs_diff": max(list(subword.values()) + list(word.values())),
            "subword_max_abs_diff": subword, "word_max_abs_diff": word,
            "tag_agreement": agreement, "min_agreement": min(agreement.values())}


def _read_dev(dev_file, labels):
    types = {lab[2:] for lab in labels if lab != "O"}
    return list(read_conll(dev_file, label_types=types))


def _dev_scores(dev, dev_file, fp32: Predictor, q8: Predictor | None) -> dict:
    gold = [s.tags for s in dev]
    words = [s.words for s in dev]
    out = {"file": str(dev_file), "sentences": len(dev), "f1_fp32": float(score(gold, fp32.predict_words(words))["f1"])}
    if q8 is not None:
        out["f1_int8"] = float(score(gold, q8.predict_words(words))["f1"])
        out["f1_delta"] = out["f1_int8"] - out["f1_fp32"]
        out["target_max_drop"] = INT8_TARGET_MAX_DROP
        out["within_target"] = bool(out["f1_delta"] >= -INT8_TARGET_MAX_DROP)
        if not out["within_target"]:
            log.warning("int8 loses %.2f F1 on %s (target: at most %.1f)", -out["f1_delta"], dev_file,
                        INT8_TARGET_MAX_DROP)
    return out


def _write_manifest(folder: Path, manifest: dict) -> None:
    write_json(folder / MANIFEST, manifest)
