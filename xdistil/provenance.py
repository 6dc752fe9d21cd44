"""Where a figure was measured: the machine, the library versions and the command line.

A latency or a throughput means little without the CPU it ran on, the thread count and
the library versions, and cannot be reproduced without the command. Every benchmark
figure xdistil writes carries one `provenance` record; ``xdistil run`` stores one per
pipeline step in ``metrics.json`` so that ``xdistil bench`` can attach it to the labeling
and distillation figures it copies from the run.

This is the one `versions()` and the one `provenance()` of xdistil: labeling manifests,
exports, bench and the benchmarks all call these. Importing this module is cheap, and so
is calling it: versions are read from the installed distributions' metadata, nothing is
imported.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from xdistil import cpuinfo

# Libraries whose versions change the figures (kernels, graph optimisations, tokenizers).
LIBRARIES = ("torch", "transformers", "datasets", "accelerate", "onnxruntime", "onnx", "tokenizers", "numpy")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what `platform` knows."""
    return cpuinfo.cpu_model() or platform.processor() or platform.machine()


def cpu_name(machine_record: dict) -> str:
    """A `machine` record's CPU as pages name it: the model and, where recorded, its vector flags
    (one name covers CPUs with other kernels: an AVX2-only and an AVX-512 BF16 AMD EPYC)."""
    flags = machine_record.get("vector_flags")
    return machine_record["cpu"] if flags is None else f"{machine_record['cpu']}, {' '.join(flags) or 'no AVX2'}"


def usable_cpus() -> int:
    """Cores this process may run on (a container or taskset can allow fewer than exist)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> list[float] | None:
    """Other work on the machine inflates every timing; the load average says how much there was."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine(threads: int | None = None) -> dict:
    """CPU model, its vector flags (`xdistil.cpuinfo.VECTOR_FLAGS`: one name covers CPUs with
    other kernels), core counts and the intra-op thread count the figures were measured with.

    ``threads`` defaults to torch's current thread count when torch is already imported.
    """
    if threads is None and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    return {"cpu": cpu_model(), "vector_flags": cpuinfo.vector_flags(), "logical_cpus": os.cpu_count(),
            "usable_cpus": usable_cpus(), "threads": threads, "platform": platform.platform()}


def versions() -> dict:
    """xdistil, Python and the `LIBRARIES` that are installed (None for those that are not)."""
    from xdistil import __version__

    out: dict[str, str | None] = {"xdistil": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def command_line(argv: list[str] | None = None, prog: str = "xdistil") -> str:
    """The command as a user would retype it: ``prog`` and its arguments, shell-quoted."""
    return shlex.join([prog, *(sys.argv[1:] if argv is None else argv)])


def provenance(command: str | None = None, threads: int | None = None) -> dict:
    """Machine, versions, command line (default: this process's) and the time.

    The JSON form of a `xdistil.results.Provenance` (``Provenance(**provenance())``), so
    that steps can keep it in their plain-JSON manifests."""
    return {"machine": machine(threads), "versions": versions(),
            "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "loadavg": load_average(), "time": datetime.now(UTC).isoformat(timespec="seconds")}


def versions_line() -> str:
    """`versions` on one line (``make test`` prints it, so a CI log says what it ran with)."""
    return "versions: " + " ".join(f"{k}={v}" for k, v in versions().items())


if __name__ == "__main__":
    print(versions_line())
