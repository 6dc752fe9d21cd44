"""Model cards: a ``README.md`` in the Hugging Face model-card format for every student and export dir.

A card is YAML front matter (language, license, tags, base_model, labels, and an
``xdistil`` block with the figures) followed by a Markdown body: what the model is, dev
F1 per language, parameters, size, latency when known, the command that made it, and
how to run it. An export's card shows two ways to run it, each a few lines that the
tests extract and execute: the torch-free runtime (``pip install xdistil-runtime``), and
plain onnxruntime + tokenizers reading ``config.json`` (id2label / label2id, written
beside every export by `write_export_config`).

`write_card` reads everything it can from the folder itself (``xdistil_student.json``
or ``export_manifest.json``, and the student an export came from); what only the caller
knows (dev F1 per language after evaluation, languages, the teacher, latency) is passed
in, and a later call with more figures simply rewrites the card.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml
from xdistil_export.atomic import write_json, write_text
from xdistil_export.runtime import MANIFEST

CARD = "README.md"
STUDENT_META = "xdistil_student.json"  # == xdistil.students.META_FILE (a layer above cards)
TEACHER_RECORD = "xdistil_teacher.json"  # == xdistil.models.DONE_MARKER
EXPORT_CONFIG = "config.json"
LICENSE = "mit"  # the project's; a card's user may change it for their own data's terms
EXAMPLE = "Angela Merkel besuchte Paris ."
EVALUATE_EXAMPLE = "xdistil evaluate . dev.conll"
EXPORT_EXAMPLE = "xdistil export . --out onnx --int8"

RUNTIME_SNIPPET = """\
from xdistil_export.runtime import Predictor

predictor = Predictor("{dir}")  # the export folder
for entity in predictor.predict(["{text}"])[0]:
    print(entity["entity_group"], entity["word"], entity["start"], entity["end"], round(entity["score"], 3))
"""

PLAIN_SNIPPET = """\
import json

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

folder = "{dir}"  # the export folder
id2label = json.load(open(f"{{folder}}/config.json"))["id2label"]
tokenizer = Tokenizer.from_file(f"{{folder}}/tokenizer.json")
session = ort.InferenceSession(f"{{folder}}/model.onnx")

words = "{text}".split()
enc = tokenizer.encode(words, is_pretokenized=True)  # adds the model's special tokens
ids = np.array([enc.ids], dtype=np.int64)
logits = session.run(["logits"], {{"input_ids": ids, "attention_mask": np.ones_like(ids)}})[0][0]
first = {{w: i for i, w in reversed(list(enumerate(enc.word_ids))) if w is not None}}  # first sub-word of each word
print([id2label[str(int(logits[first[w]].argmax()))] for w in range(len(words))])
"""


def command_line() -> str:
    """The command that is running, as a user would type it (``xdistil export ...``)."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def write_export_config(folder: str | Path, manifest: dict) -> Path:
    """``config.json`` of an export: id2label / label2id (string ids, as Hugging Face writes them)."""
    labels = list(manifest["labels"])
    return write_json(Path(folder) / EXPORT_CONFIG, {
        "id2label": {str(i): lab for i, lab in enumerate(labels)},
        "label2id": {lab: i for i, lab in enumerate(labels)},
        "num_labels": len(labels),
        "max_length": manifest.get("max_length"),
        "xdistil_kind": manifest.get("kind"),
        "format": manifest.get("format"),
    })


def write_card(
    folder: str | Path,
    scores: dict[str, float] | None = None,
    languages: list[str] | None = None,
    teacher: str | None = None,
    latency_ms: float | None = None,
    command: str | None = None,
    params: int | None = None,
) -> Path:
    """Write (or rewrite) ``folder/README.md`` for a student or export dir; returns its path.

    ``scores``: dev F1 (0-100) per language code; ``latency_ms``: online latency of one
    sentence, if measured; ``command``: default the running command line; ``params``:
    the parameter count, when the folder does not record it.
    """
    folder = Path(folder)
    info = _export_info(folder) if (folder / MANIFEST).is_file() else _student_info(folder)
    for key, value in _previous(folder).items():  # a rewrite keeps what an earlier call was told
        if info.get(key) in (None, {}, []):
            info[key] = value
    if scores:
        info["scores"] = {k: float(v) for k, v in scores.items()}
    info["languages"] = list(languages or info.get("languages") or sorted(info.get("scores", {})))
    info["teacher"] = teacher or info.get("teacher")
    if latency_ms is not None:
        info["latency_ms"] = float(latency_ms)
    if params is not None:
        info["params"] = int(params)
    info["command"] = command or info.get("command") or command_line()
    return write_text(folder / CARD, render(info))


def read_card(path: str | Path) -> tuple[dict, str]:
    """``(front matter, body)`` of a model card (a folder or its README.md)."""
    path = Path(path)
    text = (path / CARD if path.is_dir() else path).read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    if m is None:
        raise ValueError(f"{path}: no YAML front matter")
    return yaml.safe_load(m.group(1)), m.group(2)


def code_blocks(body: str, lang: str = "python") -> list[str]:
    """The fenced ``lang`` code blocks of a card's body, in order."""
    return re.findall(rf"```{lang}\n(.*?)```", body, re.S)


# ---- what a folder says about itself ----------------------------------------------------


def _student_info(folder: Path) -> dict:
    meta_file = folder / STUDENT_META
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder}: neither a student ({STUDENT_META}) nor an export ({MANIFEST}) dir")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    extra = meta.get("extra", {})
    params = extra.get("params", {})
    total = params.get("total") if isinstance(params, dict) else params
    size = sum(p.stat().st_size for p in folder.iterdir() if p.suffix == ".safetensors")
    return {"what": "student", "kind": meta.get("arch", "student"), "labels": list(meta["labels"]),
            "params": total, "size_bytes": size or None, "max_length": extra.get("max_length"),
            "stage": extra.get("stage"), "scores": dict(extra.get("dev_f1") or {}),
            "teacher": extra.get("teacher"), "languages": extra.get("languages"), "config": meta.get("config")}


def _export_info(folder: Path) -> dict:
    m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    files = m.get("files", {})
    info = {"what": "export", "kind": m.get("kind", ""), "labels": list(m["labels"]), "params": m.get("params"),
            "size_bytes": _size(folder / files.get("model", "model.onnx")), "max_length": m.get("max_length"),
            "int8_size_bytes": _size(folder / files["model_int8"]) if files.get("model_int8") else None,
            "parity": (m.get("parity") or {}).get("max_abs_diff"), "dev": m.get("dev"), "scores": {}}
    source = Path(m.get("source", ""))
    if (source / TEACHER_RECORD).is_file():  # a teacher xdistil fine-tuned: its record says from what, on what
        info.update(_teacher_info(source))
    if (source / CARD).is_file():  # the student's own card knows its languages, teacher and scores
        try:
            front, _ = read_card(source)
            x = front.get("xdistil", {})
            info.update(scores=dict(x.get("dev_f1") or {}), languages=front.get("language"),
                        teacher=front.get("base_model"), source_command=x.get("command"))
        except (ValueError, yaml.YAMLError):
            pass
    return info


def _teacher_info(folder: Path) -> dict:
    """Languages and base model of a teacher xdistil fine-tuned (its ``xdistil_teacher.json``)."""
    try:
        rec = json.loads((folder / TEACHER_RECORD).read_text(encoding="utf-8"))
        langs = ((rec.get("config") or {}).get("data") or {}).get("languages")
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in {"languages": list(langs) if langs else None, "teacher": rec.get("model")}.items() if v}


def _previous(folder: Path) -> dict:
    """What the folder's current card says (empty without one, or for one xdistil did not write)."""
    try:
        front, _ = read_card(folder)
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    x = front.get("xdistil") if isinstance(front, dict) else None
    if not isinstance(x, dict):
        return {}
    return {k: v for k, v in {"params": x.get("params"), "scores": x.get("dev_f1"), "latency_ms": x.get("latency_ms"),
                              "command": x.get("command"), "languages": front.get("language"),
                              "teacher": front.get("base_model")}.items() if v is not None}


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


# ---- the card ---------------------------------------------------------------------------


def render(info: dict) -> str:
    kind, what = info["kind"], info["what"]
    front = {
        "language": info["languages"] or None,
        "license": LICENSE,
        "library_name": "onnxruntime" if what == "export" else "xdistil",
        "pipeline_tag": "token-classification",
        "tags": ["token-classification", "ner", "xdistil", "knowledge-distillation", kind]
        + (["onnx"] if what == "export" else []),
        "base_model": info.get("teacher") or None,
        "labels": info["labels"],
        "xdistil": {k: v for k, v in {
            "kind": kind, "params": info.get("params"), "size_bytes": info.get("size_bytes"),
            "int8_size_bytes": info.get("int8_size_bytes"), "max_length": info.get("max_length"),
            "dev_f1": info.get("scores") or None, "dev_file_f1": _dev_file_f1(info.get("dev")),
            "latency_ms": info.get("latency_ms"), "command": info["command"]}.items() if v is not None},
    }
    front = {k: v for k, v in front.items() if v is not None}
    types = sorted({lab[2:] for lab in info["labels"] if lab[:2] in ("B-", "I-")})
    title = f"xdistil {kind} NER {'export (ONNX)' if what == 'export' else 'student'}"
    lines = [f"# {title}", "",
             f"A named-entity tagger ({', '.join(types) or 'no entity types'}; IOB2 tags "
             f"`{' '.join(info['labels'])}`) " + _origin(info), ""]
    lines += ["## Figures", "", "| | |", "|---|---|"]
    if info.get("params") is not None:
        lines.append(f"| parameters | {info['params']:,} |")
    if info.get("size_bytes"):
        lines.append(f"| size | {info['size_bytes'] / 1e6:.2f} MB |")
    if info.get("int8_size_bytes"):
        lines.append(f"| size (int8) | {info['int8_size_bytes'] / 1e6:.2f} MB |")
    if info.get("max_length"):
        lines.append(f"| window | {info['max_length']} sub-words (longer texts are windowed, no word is dropped) |")
    if info.get("latency_ms") is not None:
        lines.append(f"| latency | {info['latency_ms']:.2f} ms per sentence (online, CPU) |")
    if info.get("parity") is not None:
        lines.append(f"| ONNX vs PyTorch | max abs logit difference {info['parity']:.1e} |")
    dev = info.get("dev")
    if dev:
        lines.append(f"| dev F1 (`{Path(dev['file']).name}`) | fp32 {dev['f1_fp32']:.2f}"
                     + (f", int8 {dev['f1_int8']:.2f}" if "f1_int8" in dev else "") + " |")
    lines.append("")
    if info.get("scores"):
        lines += ["## Dev F1 per language", "", "| language | F1 |", "|---|---|"]
        lines += [f"| {lang} | {f1:.2f} |" for lang, f1 in sorted(info["scores"].items())]
        lines.append("")
    lines += ["## How it was made", "", "```bash", info["command"], "```", ""]
    if info.get("source_command"):
        lines += ["The student it exports was made with:", "", "```bash", info["source_command"], "```", ""]
    lines += _usage(info)
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(lines)


def _dev_file_f1(dev: dict | None) -> dict | None:
    """An export's F1 on the dev file given to ``xdistil export --dev`` (None without one)."""
    if not dev:
        return None
    return {"file": Path(dev["file"]).name, "fp32": dev["f1_fp32"],
            **({"int8": dev["f1_int8"]} if "f1_int8" in dev else {})}


def _origin(info: dict) -> str:
    if info["kind"] == "hf":
        base = f" fine-tuned from `{info['teacher']}`" if info.get("teacher") else ""
        return f"exported by xdistil from a Hugging Face token classifier (a teacher{base})."
    return f"distilled by xdistil from `{info['teacher']}`." if info.get("teacher") else \
        "distilled by xdistil from a multilingual teacher."


def _usage(info: dict) -> list[str]:
    if info["what"] == "student":
        lines = ["## How to use it", "",
                 "Evaluate it on a labeled CoNLL file (or on a language's dev split: `--lang XX`), or export it "
                 "(the export runs without torch):", "",
                 "```bash", EVALUATE_EXAMPLE, EXPORT_EXAMPLE, "```", ""]
        if info["kind"] != "transformer":
            lines += ["This is not a Hugging Face Transformers model: load it with "
                      "`xdistil.taggers.load_tagger`, or export it and run the export without torch.", ""]
        return lines + _run_export(info, "onnx", "After `xdistil export . --out onnx`, with the torch-free runtime")
    return _run_export(info, ".", "With the torch-free runtime")


def _run_export(info: dict, folder: str, intro: str) -> list[str]:
    """How to run an export in ``folder``: the runtime, and plain onnxruntime + tokenizers."""
    return [
        "## How to run the export" if folder != "." else "## How to use it", "",
        f"{intro} (`pip install xdistil-runtime`: onnxruntime, tokenizers, numpy); it "
        "splits raw text into words, windows long texts and decodes valid IOB2 with scores. "
        f"`xdistil-runtime predict {folder} input.txt` and `xdistil-runtime serve {folder}` do the same from the "
        "shell.", "",
        "```python", RUNTIME_SNIPPET.format(dir=folder, text=EXAMPLE).rstrip(), "```", "",
        "With plain onnxruntime + tokenizers (words split on spaces, one window of at most "
        f"{info.get('max_length') or 'max_length'} sub-words, per-word argmax; the graph takes `input_ids` and "
        "`attention_mask` and returns `logits`, each word is read at its first sub-word):", "",
        "```python", PLAIN_SNIPPET.format(dir=folder, text=EXAMPLE).rstrip(), "```", "",
    ]
