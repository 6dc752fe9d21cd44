"""What the CPU is: its name and feature flags, from /proc/cpuinfo (Linux).

Two readers: the precision choice (`xdistil.precision`: native bf16 or not) and every figure's
provenance (`xdistil.provenance`: the machine a timing came from). Machines of one name differ
here: an "AMD EPYC" of these sessions had AVX2 only, another AVX-512 with BF16, and bf16 and
oneDNN's kernels (so timings and the last bits of a result) follow the flags, not the name.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = "/proc/cpuinfo"
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""The flags that pick the kernels a figure ran on (x86): AVX2, AVX-512, native bf16 dot products, AMX tiles."""


def _lines(cpuinfo: str | Path) -> list[str]:
    try:
        return Path(cpuinfo).read_text().splitlines()
    except OSError:
        return []


def cpu_flags(cpuinfo: str | Path = CPUINFO) -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    for line in _lines(cpuinfo):
        if line.startswith(("flags", "Features")):  # x86 / ARM
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: str | Path = CPUINFO) -> str:
    """The CPU's name as /proc/cpuinfo gives it ("" where there is none)."""
    for line in _lines(cpuinfo):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def vector_flags(cpuinfo: str | Path = CPUINFO) -> list[str]:
    """Which of `VECTOR_FLAGS` this CPU has, in that order."""
    have = cpu_flags(cpuinfo)
    return [f for f in VECTOR_FLAGS if f in have]


def cpu_id(cpuinfo: str | Path = CPUINFO) -> str:
    """One kind of CPU, in words: its name, x86 family and model numbers where the kernel gives
    them, and its `vector_flags` ("AMD EPYC (family 25, model 1) avx2"). Two machines of one id
    run the same kernels: what a benchmark measured on one holds for the other."""
    fields: dict[str, str] = {}
    for line in _lines(cpuinfo):
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    numbers = ", ".join(f"{k.removeprefix('cpu ')} {fields[k]}" for k in ("cpu family", "model") if fields.get(k))
    name = cpu_model(cpuinfo) or "unknown CPU"
    return " ".join(x for x in (name, f"({numbers})" if numbers else "", " ".join(vector_flags(cpuinfo))) if x)
