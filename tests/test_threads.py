"""Thread settings: usable CPUs, passive OpenMP waiting set before torch starts, the load warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from xdistil import threads as T


@pytest.fixture
def env(monkeypatch):
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(k, raising=False)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def test_loaded_warning():
    assert T.loaded_warning(0.1, 2, 2) is None
    assert T.loaded_warning(0.9, 2, 1) is None  # one core busy, one thread asked: it fits
    msg = T.loaded_warning(1.8, 2, 2)
    assert msg and "1.8 CPUs busy of 2 usable CPUs" in msg and "taskset" in msg and "\n" not in msg


def test_current_load_reads_busy_cpus_from_proc_stat(monkeypatch):
    """Two /proc/stat samples (fed in: what the machine is doing is not the test's to know):
    of 400 jiffies over the window, 100 idle -> 3/4 of the CPUs busy."""
    samples = iter([(1000, 500), (1400, 600)])
    monkeypatch.setattr(T, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert T.current_load(0.0) == 3.0
    monkeypatch.setattr(T, "_cpu_times", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(T, "load_average", lambda: [1.25, 1.0, 0.5])
    assert T.current_load(0.0) == 1.25


def test_cpu_times_reads_this_machine():
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/stat is Linux's")
    times = T._cpu_times()  # total jiffies and idle jiffies, idle a part of total
    assert times is not None and 0 <= times[1] <= times[0]


def test_configure_when_torch_is_loaded(env):
    env.setattr(T, "current_load", lambda: 3.0)
    env.setattr(T, "usable_cpus", lambda: 2)
    s = T.configure(threads=1)
    assert (s.threads, s.usable_cpus, s.load) == (1, 2, 3.0)
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert not s.passive_wait  # OpenMP started with torch's import, before the policy was set
    assert s.warning and "3.0 CPUs busy" in s.warning
    env.setattr(T, "current_load", lambda: 0.0)
    assert T.configure().threads == 1  # OMP_NUM_THREADS from the environment (set above) wins
    assert T.configure(threads=2).warning is None
    with pytest.raises(ValueError, match="threads must be >= 1"):
        T.configure(threads=0)


@pytest.mark.parametrize("load, want_passive", [(0.0, False), (50.0, True)])
def test_configure_before_torch_sets_threads_and_waits_passively_only_when_loaded(load, want_passive):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    code = ("import json, os, sys\n"
            "import xdistil.threads as T\n"
            f"T.current_load = lambda: {load}\n"
            "assert 'torch' not in sys.modules\n"
            "s = T.configure()\n"
            "import torch\n"
            "print(json.dumps([s.threads, s.usable_cpus, s.passive_wait, torch.get_num_threads(),"
            " os.environ.get('OMP_WAIT_POLICY')]))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    threads, usable, passive, torch_threads, policy = json.loads(out.stdout.strip().splitlines()[-1])
    assert threads == usable == torch_threads == len(os.sched_getaffinity(0))
    # alone, spinning threads are faster (a BiLSTM step pays a wake-up per time step when
    # passive); on cores other work uses, they would steal its time
    assert passive == want_passive and (policy == "PASSIVE") == want_passive
