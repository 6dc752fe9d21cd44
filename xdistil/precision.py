"""Numeric precision of training and labeling: resolve ``auto``, autocast, loss scaling.

``precision`` (the top-level config field) is one of ``auto | fp32 | bf16 | fp16`` and
applies to teacher fine-tuning, labeling and distillation. `resolve` turns it into what
runs on a device: ``auto`` is bf16 where the hardware computes it natively (a CPU with
AVX512-BF16 or AMX, a CUDA GPU with bf16), fp16 with a loss scaler on older CUDA GPUs,
fp32 everywhere else. Mixed precision here is always `torch.autocast`: the forward pass
runs its matrix products in the low precision while the parameters (the master weights),
the optimizer state and every saved model stay fp32. fp32 runs no autocast at all, so
its results are bit for bit those of code that never heard of this module.

Where accelerate runs a loop, `mixed_precision` gives the string its ``Accelerator``
takes (it then autocasts and scales itself).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of native bf16 arithmetic: AVX-512 BF16 dot products, AMX tiles
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):  # x86 / ARM
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (otherwise bf16 is emulated, and slower than fp32)."""
    return any(f in cpu_flags() for f in CPU_BF16_FLAGS)


def resolve(precision: str, device) -> str:
    """``"fp32" | "bf16" | "fp16"``: what ``precision`` means on ``device`` (a torch device or its name).

    An explicit choice is kept (bf16 on a CUDA GPU without bf16 is an error, not a silent
    fallback); ``auto`` picks the fastest precision the hardware runs natively."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision bf16: this CUDA GPU does not support bf16; use fp16 or auto")
    if precision != "auto":
        return precision
    if kind == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
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
