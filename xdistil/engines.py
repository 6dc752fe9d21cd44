"""Labeling engines: how the teachers' forward pass runs while the transfer set is labeled.

``transfer.engine`` (`xdistil.config.TransferConfig`) is one of:

- ``torch``: the teacher module itself, under the resolved `xdistil.precision` (what every
  release before the engines did);
- ``ort`` / ``ort-int8``: the teacher exported to ONNX, its graph outputs the logits and the
  hidden states of exactly ``transfer.layers`` (no other layer is an output), run by
  onnxruntime on the CPU with torch's thread count; ``ort-int8`` quantizes the weight matrices
  to int8 (dynamic quantization: activations are quantized on the fly, per batch);
- ``auto`` (the default): measured on the machine at hand, as ``precision: auto`` is. A set of
  fewer than `AUTO_MIN_SENTENCES` transfer sentences is labeled in torch without measuring
  anything. Otherwise `probe` labels a few
  hundred real transfer sentences with torch (at the resolved precision), ORT fp32 and ORT
  int8, interleaved, and measures each one's word tags against torch fp32; `choose` takes the
  fastest engine whose tags agree on at least `MIN_AGREEMENT` of the words, and leaves torch
  only for a speed-up of at least `MIN_SPEEDUP`. The choice is cached per CPU model, versions,
  threads, teacher (its bytes), layers, precision and batch size, so a rerun resolves the same
  way, and recorded in the transfer manifest (``engine_choice``). Why measure: on an Intel Xeon
  fp32 labeled the demo at 220 sentences/s and bf16 at 150; the fastest engine differs by CPU.

`OrtTeacher` is called like the torch teacher and returns the same `TaggerOutput` (the
stored layers' hidden states at their indices, None elsewhere), so
`xdistil.taggers.word_logits` and everything after it cannot tell the engines apart.

Graphs are exported once per teacher into ``$XDISTIL_CACHE/engines/<key>/`` (else
``~/.cache/xdistil``; about 1.25x the teacher's weights for fp32 + int8), keyed by the
teacher's bytes, the layers and the versions of torch, transformers, onnx and onnxruntime;
each graph folder is built aside and renamed into place (`xdistil_export.atomic.atomic_dir`)
and carries the checksum it is verified against before use. Nothing is written inside the
transfer set. Delete the folder at any time: it is rebuilt on the next use.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from xdistil_export.atomic import atomic_dir, write_json

from xdistil import digests, onnx_graph
from xdistil.data.align import WindowEncoder, collate
from xdistil.outputs import TaggerOutput
from xdistil.precision import autocast, cache_file, cpu_model
from xdistil.provenance import versions
from xdistil.taggers import Tagger, word_logits

log = logging.getLogger(__name__)

ENGINES = ("torch", "ort", "ort-int8", "auto")
ORT_ENGINES = ("ort", "ort-int8")
MIN_AGREEMENT = 0.99
"""An onnxruntime engine is eligible for ``auto`` only where its word tags agree with torch fp32 on this share."""
MIN_SPEEDUP = 1.1
"""``auto`` leaves torch only for an engine at least this much faster on the probe."""
AUTO_MIN_SENTENCES = 2000
"""``auto`` (the default) is torch without a probe below this many transfer sentences: labeling
a small set takes less than exporting the teacher and measuring the engines would."""
PROBE_SENTENCES = 200
"""Transfer sentences `probe` labels with each engine (the first of every language, in turn)."""
ROUNDS = 3
OPSET = 17
GRAPH = "model.onnx"
INFO = "graph.json"
INT8 = {"weights": "QInt8 per channel", "ops": "MatMul with a constant weight", "except": "down-projections"}
"""What `quantize` does; a cached int8 graph or choice made another way is not reused."""


class EngineError(ValueError):
    """An engine cannot run here; the message says why in one line and what to do."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise EngineError("transfer.engine ort / ort-int8 / auto needs onnxruntime: pip install onnxruntime") from None
    return onnxruntime


# ---- the engine as a module ----------------------------------------------------------------


class OrtTeacher(nn.Module):
    """An exported teacher run by onnxruntime, called as the torch teacher is:
    (input_ids, attention_mask, word_mask) -> `TaggerOutput`, its ``hidden_states`` a tuple of
    ``n_states`` with the graph's ``layers`` at their indices (None elsewhere)."""

    def __init__(self, graph: Path, layers: Sequence[int], n_states: int, threads: int | None = None):
        super().__init__()
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # the graph is a chain: no inter-op pool
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        self.layers, self.n_states = tuple(layers), n_states
        self.outputs = ["logits", *(f"hidden_{i}" for i in self.layers)]

    def forward(self, input_ids, attention_mask, word_mask, output_hidden_states: bool = False) -> TaggerOutput:
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}  # (B, T) int64
        got = self.session.run(self.outputs if output_hidden_states else self.outputs[:1], feed)
        hidden: list[torch.Tensor | None] = [None] * self.n_states
        for layer, h in zip(self.layers, got[1:], strict=False):
            hidden[layer] = torch.from_numpy(h)  # (B, T, H)
        return TaggerOutput(torch.from_numpy(got[0]), tuple(hidden) if output_hidden_states else (), word_mask)


class _Outputs(nn.Module):
    """The exported graph's contract: (input_ids, attention_mask) -> logits (B, T, C), then the
    hidden state (B, T, H) of each of ``layers``, in that order."""

    def __init__(self, module: nn.Module, layers: Sequence[int]):
        super().__init__()
        self.module, self.layers = module, tuple(layers)

    def forward(self, input_ids, attention_mask):
        out = self.module(input_ids, attention_mask, attention_mask.bool(), output_hidden_states=bool(self.layers))
        return (out.logits, *(out.hidden_states[i] for i in self.layers))


def n_states(tagger: Tagger, layers: Sequence[int]) -> int:
    """How many hidden states the teacher has (embeddings + one per layer)."""
    config = getattr(getattr(tagger.module, "model", None), "config", None)
    n = getattr(config, "num_hidden_layers", None)
    return max([n + 1 if n is not None else 0, *(i + 1 for i in layers)])


# ---- export, once per teacher --------------------------------------------------------------


def _teacher_identity(tagger: Tagger) -> str:
    """The teacher's content (`digests.content_digest`: label map, weights, tokenizer), or its
    name where it is no folder."""
    p = Path(tagger.path)
    return digests.content_digest(p) if p.is_dir() else tagger.path


def _versions() -> dict:
    v = versions()
    return {k: v.get(k) for k in ("torch", "transformers", "onnx", "onnxruntime")}


def graph_key(tagger: Tagger, layers: Sequence[int]) -> dict:
    """What an exported graph depends on: the teacher's bytes, the layers, the exporter's versions."""
    return {"teacher": _teacher_identity(tagger), "layers": list(layers), "opset": OPSET, "versions": _versions()}


def cache_root() -> Path:
    """``$XDISTIL_CACHE/engines`` (else ``~/.cache/xdistil/engines``): graphs and ``auto``'s choices."""
    return cache_file().parent / "engines"


def _ready(folder: Path) -> bool:
    """A graph folder that was finished (its info written last) and whose graph still has its bytes."""
    try:
        info = json.loads((folder / INFO).read_text())
        return digests.cached_file_digest(folder / GRAPH) == info["sha256"]  # read once a process
    except (OSError, ValueError, KeyError):
        return False


def _example(tagger: Tagger, sentences: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real windows of different lengths, padded: the traced graph keeps its padding mask
    (no "no padding" shortcut of the model's masking code is frozen into it)."""
    words = list(max(sentences, key=len))
    enc = WindowEncoder(tagger.tokenizer, tagger.max_length)
    pieces = enc.encode([words * 2, words[:1]])  # the second window is shorter than the first
    batch = collate([pieces[0], pieces[-1]], enc.specials.pad_id)
    return batch["input_ids"], batch["attention_mask"]  # (2, T) each


def export(tagger: Tagger, layers: Sequence[int], path: Path, sentences: Sequence[Sequence[str]]) -> None:
    """Trace the teacher into the ONNX file ``path``: inputs ``input_ids``, ``attention_mask``
    (batch, sequence) int64; outputs ``logits`` and ``hidden_{L}`` for every L of ``layers``,
    all with dynamic batch and sequence axes (`xdistil.onnx_graph.trace`, as deployable exports)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise EngineError("exporting the teacher for labeling needs onnx: pip install onnx") from None
    names = ["logits", *(f"hidden_{i}" for i in layers)]
    try:
        onnx_graph.trace(_Outputs(tagger.module, layers).eval(), _example(tagger, sentences), path, OPSET, names)
    except Exception as e:  # whatever the exporter trips on: one line, and the way out
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise EngineError(f"teacher {tagger.path} cannot be exported to ONNX for labeling "
                          f"({type(e).__name__}: {reason}); use transfer.engine: torch") from e


def quantize(src: Path, dst: Path) -> None:
    """The int8 graph of ``src`` into ``dst``: dynamic quantization, per output channel, of the
    MatMuls with a constant weight (torch's dynamic quantization of Linear layers), except the
    down-projections (weights with more rows than columns: the feed-forward output and the
    classifier). Their input is the widest-ranged activation (after GELU), which one int8 scale
    per batch serves worst: on the demo teacher quantizing them too took layer 6's relative
    error from 0.08 to 0.32 and the word tags' agreement with fp32 from 99.5 % to 98.6 % (100
    sentences of de ar hi), for about 15 % more speed. Embeddings (Gather) and the attention's
    activation-by-activation products stay fp32."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    down = [n.name for n in model.graph.node if n.op_type == "MatMul" and len(weights.get(n.input[1], ())) == 2
            and weights[n.input[1]][0] > weights[n.input[1]][1]]
    onnx_graph.quantize(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, nodes_to_exclude=down,
                        extra_options={"MatMulConstBOnly": True})


def graph(tagger: Tagger, layers: Sequence[int], int8: bool, sentences: Sequence[Sequence[str]]) -> Path:
    """The cached ONNX graph of the teacher with ``layers`` as outputs (fp32, or int8), exported
    (and quantized) on first use; ``sentences`` give the trace its example batch."""
    key = graph_key(tagger, layers)
    root = cache_root() / digests.digest(key)
    fp32 = root / "fp32"
    if not _ready(fp32):
        _onnxruntime()
        t = time.perf_counter()
        with atomic_dir(fp32) as tmp:
            export(tagger, layers, tmp / GRAPH, sentences)
            write_json(tmp / INFO, {"key": key, "sha256": digests.file_digest(tmp / GRAPH),
                                    "seconds": round(time.perf_counter() - t, 1)})
        log.info("exported teacher %s for labeling to %s in %.0f s", tagger.path, fp32, time.perf_counter() - t)
    if not int8:
        return fp32 / GRAPH
    q8 = root / f"int8-{digests.digest(INT8)[:8]}"
    if not _ready(q8):
        with atomic_dir(q8) as tmp:
            quantize(fp32 / GRAPH, tmp / GRAPH)
            write_json(tmp / INFO, {"key": {**key, "int8": INT8}, "sha256": digests.file_digest(tmp / GRAPH)})
    return q8 / GRAPH


def module(tagger: Tagger, engine: str, layers: Sequence[int], sentences: Sequence[Sequence[str]] = (),
           threads: int | None = None) -> nn.Module:
    """What labels with the resolved ``engine``: the teacher's own module (torch), or an
    `OrtTeacher` on its cached graph (exported now from ``sentences`` where there is none)."""
    if engine == "torch":
        return tagger.module
    if engine not in ORT_ENGINES:
        raise EngineError(f"engine {engine!r} is not resolved: use one of torch, {', '.join(ORT_ENGINES)}")
    layers = list(dict.fromkeys(layers))  # a layer named twice is one output
    path = graph(tagger, layers, engine == "ort-int8", sentences)
    return OrtTeacher(path, layers, n_states(tagger, layers), threads)


# ---- the probe: speed and agreement on real sentences --------------------------------------


def _label(tagger: Tagger, mod: nn.Module, sentences, batch_size: int, layers, precision: str):
    with autocast(precision, "cpu"):
        return word_logits(dataclasses.replace(tagger, module=mod), sentences, batch_size, hidden_layers=tuple(layers))


def time_engines(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of every run, interleaved over ``rounds`` (each already warmed up once), so a
    machine that slows down or speeds up meanwhile touches every engine alike."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - t)
    return seconds


def compare(reference: tuple[list, dict], got: tuple[list, dict]) -> dict:
    """Word-level agreement of ``got`` (word_logits' (logits, hidden)) with ``reference``: the
    share of words with the same hard tag, the largest logit difference and the hidden states'
    relative error (norm of the difference / norm of the reference, over all words)."""
    ref_logits, ref_hidden = reference
    logits, hidden = got
    a, b = torch.cat(ref_logits), torch.cat(logits)  # (N_words, C)
    out = {"words": len(a), "tag_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()) if len(a) else 1.0,
           "max_abs_diff": float((a - b).abs().max()) if len(a) else 0.0}
    for layer, ref in ref_hidden.items():
        x, y = torch.cat(ref), torch.cat(hidden[layer])  # (N_words, H)
        out[f"hidden_{layer}_rel_err"] = float((x - y).norm() / x.norm().clamp_min(1e-12))
    return out


def probe(tagger: Tagger, modules: dict[str, nn.Module], sentences: Sequence[Sequence[str]], batch_size: int,
          layers: Sequence[int], precision: str, rounds: int = ROUNDS) -> dict:
    """Label ``sentences`` with each of ``modules`` (name -> module; "torch" runs under the
    resolved ``precision``, the others as they are): each one's agreement with torch fp32
    (`compare`) and, with ``rounds``, its median sentences/s over interleaved rounds after a
    warm-up pass (which is also the pass compared)."""
    reference = _label(tagger, tagger.module, sentences, batch_size, layers, "fp32")
    figures, runs = {}, {}
    for name, mod in modules.items():
        prec = precision if name == "torch" else "fp32"

        def run(mod=mod, prec=prec):
            return _label(tagger, mod, sentences, batch_size, layers, prec)

        figures[name] = compare(reference, run())
        runs[name] = run
    if rounds:
        for name, secs in time_engines(runs, rounds).items():
            figures[name]["sentences_per_s"] = round(len(sentences) / statistics.median(secs), 1)
    return {"sentences": len(sentences), "rounds": rounds, "precision": precision, "engines": figures}


def choose(figures: dict[str, dict]) -> str:
    """``auto``'s pick from `probe`'s figures: the fastest onnxruntime engine whose tags agree
    with torch fp32 on at least `MIN_AGREEMENT` of the words, where it is at least `MIN_SPEEDUP`
    times as fast as torch; otherwise torch."""
    base = figures["torch"]["sentences_per_s"]
    fast = [n for n in ORT_ENGINES if n in figures and figures[n]["tag_agreement"] >= MIN_AGREEMENT
            and figures[n]["sentences_per_s"] >= MIN_SPEEDUP * base]
    return max(fast, key=lambda n: figures[n]["sentences_per_s"]) if fast else "torch"


# ---- resolve: what the config's engine means here ------------------------------------------


def _choice_key(tagger: Tagger, layers, precision: str, batch_size: int) -> str:
    v = _versions()
    return (f"{cpu_model()} | torch {v['torch']} | onnxruntime {v['onnxruntime']} | {torch.get_num_threads()} threads"
            f" | teacher {_teacher_identity(tagger)} | layers {list(layers)} | {precision} | batch {batch_size}"
            f" | int8 {digests.digest(INT8)[:8]}")


def _cached_choice(key: str) -> dict | None:
    try:
        rec = json.loads((cache_root() / "choices" / f"{digests.digest(key)}.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("key") == key and rec.get("resolved") in ENGINES[:3] else None


def resolve(tagger: Tagger, asked: str, layers: Sequence[int], sentences: Sequence[Sequence[str]], batch_size: int,
            precision: str, device="cpu", refresh: bool = False) -> dict:
    """What ``transfer.engine`` ``asked`` means for this teacher here, as a record for the
    transfer manifest: ``{"asked", "resolved", ...}`` and, for ``auto``, the probe that decided
    it (cached: a rerun on the same machine resolves the same way; ``refresh`` measures again).
    An explicit onnxruntime engine is exported (once) and its agreement with torch fp32 on
    ``sentences`` recorded (and warned about below `MIN_AGREEMENT`). ``precision``: the
    resolved precision torch labels in. onnxruntime engines run on the CPU and export Hugging
    Face teachers: elsewhere, or where the teacher cannot be exported, ``auto`` is torch (the
    record says why) and an explicit one an `EngineError`."""
    if asked not in ENGINES:
        raise EngineError(f"transfer.engine {asked!r}: use one of {', '.join(ENGINES)}")
    if asked == "torch":
        return {"asked": asked, "resolved": "torch"}
    kind = torch.device(device).type
    why = (f"onnxruntime engines run on the CPU; this process labels on {kind}" if kind != "cpu" else
           f"onnxruntime engines export Hugging Face teachers; {tagger.path} is a {tagger.kind} model"
           if tagger.kind != "hf" else None)
    if why:
        if asked == "auto":
            return {"asked": asked, "resolved": "torch", "reason": why}
        raise EngineError(f"transfer.engine {asked}: {why}; use transfer.engine: torch")
    sentences = [list(s) for s in sentences if len(s)]
    if not sentences:
        raise EngineError("no transfer sentences to probe the labeling engines on")
    if asked in ORT_ENGINES:
        mod = module(tagger, asked, layers, sentences)
        check = probe(tagger, {asked: mod}, sentences, batch_size, layers, precision, rounds=0)["engines"][asked]
        if check["tag_agreement"] < MIN_AGREEMENT:
            log.warning("transfer.engine %s: its tags agree with torch fp32 on %.2f %% of %d probe words (below %.0f %%)",
                        asked, 100 * check["tag_agreement"], check["words"], 100 * MIN_AGREEMENT)
        return {"asked": asked, "resolved": asked, "check": {"sentences": len(sentences), **check}}
    key = _choice_key(tagger, layers, precision, batch_size)
    if not refresh and (cached := _cached_choice(key)) is not None:
        return {**cached, "cached": True}
    try:
        modules = {"torch": tagger.module, **{e: module(tagger, e, layers, sentences) for e in ORT_ENGINES}}
    except EngineError as e:  # auto asks for the fastest engine that holds: here that is torch
        log.warning("transfer.engine auto: %s", e)
        return {"asked": asked, "resolved": "torch", "reason": str(e)}
    measured = probe(tagger, modules, sentences, batch_size, layers, precision)
    record = {"asked": asked, "resolved": choose(measured["engines"]), "probe": measured,
              "min_agreement": MIN_AGREEMENT, "min_speedup": MIN_SPEEDUP, "key": key,
              "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        write_json(cache_root() / "choices" / f"{digests.digest(key)}.json", record)
    except OSError:  # a cache that cannot be written costs a new measurement next time, not an error
        pass
    return {**record, "cached": False}
