"""Peak resident memory of one piece of work inside a longer process.

``ru_maxrss`` only ever grows, so in ``xdistil run`` (teacher -> label -> distill in one
process) it would charge labeling with the teacher training's peak. On Linux, writing
``5`` to ``/proc/self/clear_refs`` resets the high-water mark (``VmHWM``); `PeakMemory`
does that on entry and reads ``VmHWM`` on exit. Elsewhere it falls back to ``ru_maxrss``
(a process-wide peak, marked ``"scope": "process"``).

    with PeakMemory() as mem:
        work()
    mem.result()  # {"peak_rss_mb": 812.4, "scope": "step"}

or ``mem = PeakMemory().start(); ...; mem.stop()`` where a ``with`` block does not fit.
"""

from __future__ import annotations

import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _maxrss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    def start(self) -> PeakMemory:
        self.scope = "process"
        try:
            _CLEAR.write_text("5")
            if _status_kb("VmHWM") is not None:
                self.scope = "step"
        except OSError:
            pass
        self.peak_mb: float | None = None
        return self

    def stop(self) -> PeakMemory:
        hwm = _status_kb("VmHWM") if self.scope == "step" else None
        self.peak_mb = round(hwm / 1024, 1) if hwm is not None else round(_maxrss_mb(), 1)
        return self

    def __enter__(self) -> PeakMemory:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def result(self) -> dict:
        return {"peak_rss_mb": self.peak_mb, "scope": self.scope}
