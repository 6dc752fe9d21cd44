"""Numeric precision of training and labeling: resolve ``auto``, autocast, loss scaling.

``precision`` (the top-level config field) is one of ``auto | fp32 | bf16 | fp16`` and
applies to teacher fine-tuning, labeling and distillation. `resolve` turns it into what
runs on a device. On a CPU, ``auto`` is *measured, not assumed*: where the CPU computes bf16
natively (AVX512-BF16 or AMX) a short calibration (`calibrate`, about a second) times one
forward + backward pass of the work at hand -- an encoder layer for teachers, a BiLSTM for
students -- in fp32 and in bf16, and bf16 is chosen only where it is at least `MIN_SPEEDUP`
faster. The result is cached per machine (CPU model and vector flags, torch version, threads) in
``$XDISTIL_CACHE/precision.json`` (else ``~/.cache/xdistil``) and recorded in the step's
provenance (`choice_record`). Why: on an AMD EPYC bf16 fine-tuned the demo teacher 1.5x faster
than fp32, on an Intel Xeon with the same flags 1.27x *slower* (benchmarks/results/precision).
A CPU without native bf16 gets fp32; a CUDA GPU gets bf16 (fp16 with a loss scaler on older
ones). Mixed precision here is always `torch.autocast`: the forward pass runs its matrix
products in the low precision while the parameters (the master weights), the optimizer state
and every saved model stay fp32. fp32 runs no autocast at all, so its results are bit for bit
those of code that never heard of this module.

Where accelerate runs a loop, `mixed_precision` gives the string its ``Accelerator``
takes (it then autocasts and scales itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import torch

from xdistil.cpuinfo import cpu_flags, cpu_model, vector_flags

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of native bf16 arithmetic: AVX-512 BF16 dot products, AMX tiles
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_SPEEDUP = 1.1
"""bf16 is chosen by ``auto`` on a CPU only where it runs the calibration this much faster than fp32."""
WORKS = ("encoder", "bilstm")
"""What `calibrate` times: a Transformer encoder layer (teachers, Transformer students) or a BiLSTM."""


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (otherwise bf16 is emulated, and slower than fp32)."""
    return any(f in cpu_flags() for f in CPU_BF16_FLAGS)


def cache_file() -> Path:
    """Where `calibrate` keeps its measurements."""
    root = os.environ.get("XDISTIL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "xdistil") / "precision.json"


def _key(work: str) -> str:
    # the flags too: one CPU name covers AVX2-only and AVX-512 BF16 machines
    return (f"{cpu_model()} ({' '.join(vector_flags()) or 'no vector flags'}) | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads | {work}")


def _workload(work: str, generator: torch.Generator):
    """One training step's worth of ``work``: (module, input) at the size the presets train."""
    # small batches: the calibration must take about a second, and the matrix shapes are the real ones
    if work == "encoder":  # an e5-small layer on 8 windows of 32 pieces
        module = torch.nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, batch_first=True)
        x = torch.randn(8, 32, 384, generator=generator)
    elif work == "bilstm":  # the default student: 2 layers, 66 (piece + shape) -> 200, 16 windows of 32
        module = torch.nn.LSTM(66, 200, num_layers=2, bidirectional=True, batch_first=True)
        x = torch.randn(16, 32, 66, generator=generator)
    else:
        raise ValueError(f"work {work!r}: use one of {', '.join(WORKS)}")
    return module, x


def _step_ms(module, x, precision: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with autocast(precision, "cpu"):
            out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().mean().backward()
        times.append(1000 * (time.perf_counter() - start))
    return times


def probe(work: str = "encoder", rounds: int = 3, repeats: int = 2) -> dict:
    """Time one forward + backward pass of ``work`` in fp32 and in bf16 autocast on this CPU,
    interleaved (``rounds`` of each, ``repeats`` calls a round, after a warm-up), and measure
    the relative error of one bf16 matrix product against fp32 (where the products accumulate
    in fp32, it stays near the bf16 rounding of the inputs). Medians in ms; ``choice``: what
    ``auto`` takes from it."""
    g = torch.Generator().manual_seed(0)
    module, x = _workload(work, g)
    if not cpu_has_bf16():  # oneDNN has no bf16 LSTM here (it fails to build one): say so in one line
        raise ValueError(f"this CPU ({cpu_model() or 'unknown'}) has no native bf16 ({', '.join(CPU_BF16_FLAGS)}): "
                         "nothing to probe; precision auto takes fp32 here")
    times = {"fp32": [], "bf16": []}
    for p in times:  # warm-up: kernels chosen, memory allocated
        _step_ms(module, x, p, 1)
    for _ in range(rounds):
        for p in times:
            times[p] += _step_ms(module, x, p, repeats)
    fp32_ms, bf16_ms = (statistics.median(times[p]) for p in ("fp32", "bf16"))
    a, b = torch.randn(384, 384, generator=g), torch.randn(384, 1536, generator=g)
    exact = a.double() @ b.double()
    with autocast("bf16", "cpu"):
        low = (a @ b).double()
    rounded = a.bfloat16().double() @ b.bfloat16().double()
    rel = lambda y: float((y - exact).norm() / exact.norm())  # noqa: E731
    with autocast("bf16", "cpu"):  # what the residual stream between encoder layers is stored in
        norm_dtype = str(torch.nn.functional.layer_norm(a @ b, (1536,)).dtype).removeprefix("torch.")
    return {"work": work, "layer_norm_output": norm_dtype, "fp32_ms": round(fp32_ms, 2), "bf16_ms": round(bf16_ms, 2),
            "bf16_speedup": round(fp32_ms / bf16_ms, 3), "matmul_rel_err": rel(low),
            "input_rounding_rel_err": rel(rounded),
            "choice": "bf16" if fp32_ms / bf16_ms >= MIN_SPEEDUP else "fp32"}


def calibrate(work: str = "encoder", refresh: bool = False) -> dict:
    """The cached `probe` of ``work`` on this machine (CPU model and flags, torch, threads), measured at
    first use. A cache that cannot be read or written costs a new measurement, not an error."""
    path, key = cache_file(), _key(work)
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict) and cache[key].get("choice") in ("fp32", "bf16"):
        return cache[key]
    record = {**probe(work), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    cache[key] = record
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass
    return record


def choice_record(precision: str, device, work: str = "encoder") -> dict:
    """What a step records in its provenance: the precision asked for, what it resolved to,
    and, where ``auto`` was calibrated, the measurement that decided it."""
    resolved = resolve(precision, device, work)
    record = {"asked": precision, "resolved": resolved}
    if precision == "auto" and torch.device(device).type == "cpu" and cpu_has_bf16():
        record["calibration"] = {**calibrate(work), "key": _key(work)}
    return record


def resolve(precision: str, device, work: str = "encoder") -> str:
    """``"fp32" | "bf16" | "fp16"``: what ``precision`` means on ``device`` (a torch device or its name).

    An explicit choice is kept (bf16 on a CUDA GPU without bf16 is an error, not a silent
    fallback); ``auto`` picks the faster precision the hardware runs natively -- on a CPU by
    measuring ``work`` (`calibrate`), since native bf16 is not always the faster one."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision bf16: this CUDA GPU does not support bf16; use fp16 or auto")
    if precision != "auto":
        return precision
    if kind == "cpu":
        return calibrate(work)["choice"] if cpu_has_bf16() else "fp32"
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(precision: str, device):
    """Context manager running the forward pass in a resolved ``precision`` on ``device``.

    fp32 is a no-op context (no autocast at all); bf16 / fp16 are `torch.autocast`, which
    casts inside matrix products only: parameters and gradients stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r} is not resolved (see xdistil.precision.resolve)")
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (whose small gradients would underflow), None otherwise.

    Use: ``scaler.scale(loss).backward(); scaler.unscale_(opt)`` (before clipping);
    ``scaler.step(opt); scaler.update()``."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


def mixed_precision(precision: str) -> str:
    """accelerate's ``Accelerator(mixed_precision=...)`` value for a resolved precision."""
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
