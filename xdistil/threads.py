"""Thread settings for a process that may share its cores: call `configure` first thing.

Three things make torch slow on a shared machine. (1) It sizes its thread pool from all
the cores of the machine, not those this process may use (a container, ``taskset``).
(2) OpenMP threads that run out of work spin ("busy-wait") for a while before sleeping,
so two torch processes on the same cores burn each other's time: two xdistil processes on
2 cores slowed a BiLSTM batch from 0.2 s to 8 s. ``OMP_WAIT_POLICY=PASSIVE`` makes idle
threads sleep at once -- but alone on its cores, a BiLSTM (many small parallel regions,
one per time step) then pays a wake-up for each: measured here, a 2-layer BiLSTM training
step went from 73 to 138 ms. So passive waiting is chosen only when the machine is
already loaded when the process starts (two processes at once: 134 ms passive vs 177 ms
spinning). OpenMP reads the policy when it starts, i.e. when torch is imported, so
`configure` must run before that. (3) Work already running on the machine: `configure`
warns when the cores are busy now: the CPU time other processes took over the last 0.2 s
(``/proc/stat``), not the load average, which lags by minutes (a job that just ended would
still read as load and turn passive waiting on).

The thread count is the one asked for, else ``OMP_NUM_THREADS`` from the environment,
else every usable CPU; an ``OMP_WAIT_POLICY`` already in the environment is kept.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from xdistil.provenance import load_average, usable_cpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadSettings:
    threads: int  # intra-op threads of torch (and OpenMP / MKL)
    usable_cpus: int  # cores this process may run on
    passive_wait: bool  # OMP_WAIT_POLICY=PASSIVE is in effect for this process's OpenMP
    load: float | None  # busy CPUs when configured (`current_load`)
    warning: str | None  # the "machine already loaded" warning, when one was given


def configure(threads: int | None = None, warn: bool = True) -> ThreadSettings:
    """Set intra-op threads from the usable CPUs; on a loaded machine passive OpenMP waiting and a warning.

    ``threads``: an explicit count (e.g. one core per job when two run side by side);
    default ``OMP_NUM_THREADS`` when set, else every usable CPU. Call it before torch is
    imported (``xdistil.cli.main`` does): then OpenMP starts with these settings. When
    torch is already imported, its thread count is still set, but passive waiting applies
    only if the environment had it from the start."""
    usable = usable_cpus()
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else usable
    elif threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch_loaded = "torch" in sys.modules
    had_policy = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    # sampling costs 0.2 s: only the long-running commands (warn=True) pay it and get the
    # policy and the warning that depend on it; short ones keep OpenMP's defaults
    load = current_load() if warn else None
    message = loaded_warning(load, usable, threads) if load is not None else None
    if message:  # other work on these cores: sleep instead of spinning (see the module doc)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    # the tokenizers' own thread pool (Rust) would compete with torch's for the same cores
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if torch_loaded:
        torch = sys.modules["torch"]
        torch.set_num_threads(threads)
    passive = had_policy or (not torch_loaded and os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE")
    if message:
        log.warning(message)
    return ThreadSettings(threads, usable, passive, load, message)


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]), idle


def current_load(window: float = 0.2) -> float | None:
    """How many CPUs other processes keep busy right now: the machine's non-idle CPU time over
    ``window`` seconds (``/proc/stat``), in CPUs; the 1-minute load average where there is no
    /proc/stat. This process is idle while it samples, so what it sees is other work."""
    import time

    a = _cpu_times()
    if a is None:
        load = load_average()
        return load[0] if load else None
    time.sleep(window)
    b = _cpu_times()
    total, idle = b[0] - a[0], b[1] - a[1]
    if total <= 0:
        return 0.0
    return round((1 - idle / total) * (os.cpu_count() or 1), 2)


def loaded_warning(load: float, usable: int, threads: int) -> str | None:
    """The warning for a machine whose other work leaves fewer free cores than ``threads``, else None.

    ``load``: busy CPUs (`current_load`); more than ``usable - threads`` of them (with half a
    core of slack for short-lived work) means this job will share cores."""
    if load + threads <= usable + 0.5:
        return None
    return (f"this machine is already loaded ({load:.1f} CPUs busy of {usable} usable CPU"
            f"{'s' if usable != 1 else ''}, {threads} thread{'s' if threads != 1 else ''} asked): timings will be "
            "slow and noisy; to run two jobs side by side give each its own cores (taskset -c 0 ..., taskset -c 1 ...)")
