"""Build the two distributions' wheels as a release would, for tests/test_wheel.py and
tests/test_torchfree.py (the conftest fixture `wheels` builds them once a session).

The build reads a copy of the checkout's own files (tracked, plus untracked ones git does not
ignore), never the working tree itself: setuptools' `build/` folder there keeps modules that were
deleted since, and other processes may be writing in it. Offline: no build isolation, no index.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checkout_files(*pathspecs: str) -> list[str]:
    """Paths (relative to the repository) of the checkout's files matching ``pathspecs`` (all when
    none): what `git ls-files` tracks plus untracked files that .gitignore does not exclude."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                          "--", *pathspecs], capture_output=True, text=True, check=True, timeout=60).stdout
    # a tracked file deleted in the working tree is not part of what would be committed
    return sorted({p for p in out.split("\0") if p and (REPO / p).is_file()})


def build_wheels(dest: Path) -> dict[str, Path]:
    """``{"xdistil": wheel, "xdistil-runtime": wheel}``, built under ``dest`` from a copy of the checkout."""
    src = dest / "src"
    for rel in checkout_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    dist = dest / "dist"
    wheels = {}
    for name, folder in (("xdistil", src), ("xdistil-runtime", src / "export")):
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                               "-q", "-w", str(dist), str(folder)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"building the {name} wheel failed:\n{proc.stderr[-3000:]}"
        (wheels[name],) = dist.glob(name.replace("-", "_") + "-*.whl")
    return wheels


def wheel_files(wheel: Path) -> set[str]:
    """The files a wheel installs, without its ``*.dist-info`` metadata."""
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if not n.endswith("/") and ".dist-info/" not in n}


def console_scripts(wheel: Path) -> dict[str, str]:
    """The commands a wheel declares: ``{"xdistil": "xdistil.cli:main", ...}``."""
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = z.read(name).decode("utf-8")
    section = text.split("[console_scripts]", 1)[1].split("\n[", 1)[0]
    return dict((k.strip(), v.strip()) for k, v in (line.split("=", 1) for line in section.splitlines() if "=" in line))
