"""Nothing under export/ imports torch, transformers or xdistil: every module is imported with them blocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tiny import import_blocker

EXPORT = Path(__file__).resolve().parents[1] / "export"
BLOCKED = ("torch", "transformers", "xdistil")

BLOCK = import_blocker(*BLOCKED, why="export/ must not import it")


def test_every_export_module_imports_with_torch_transformers_and_xdistil_blocked():
    modules = sorted(p.stem for p in EXPORT.glob("*.py") if p.stem != "__init__")
    assert {"runtime", "serve", "decode", "windows", "text", "cli", "atomic"} <= set(modules)
    script = BLOCK + textwrap.dedent(f"""
        import importlib, json
        import xdistil_export
        for m in {modules!r}:
            importlib.import_module("xdistil_export." + m)
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=""))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_blocker_really_blocks():
    proc = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


def test_runtime_distribution_installs_without_torch_and_predicts(tmp_path):
    """Build the `xdistil-runtime` wheel from export/, install it into a fresh venv, run its `predict`.

    The venv gets its dependencies from the package index (onnxruntime, tokenizers, numpy,
    regex); it has no torch, transformers or xdistil. Takes about 20 s.
    """
    import shutil

    import torch
    from tiny import make_tiny_teacher, tiny_words
    from xdistil_export.runtime import Predictor

    from xdistil.onnx_export import export_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    export = tmp_path / "onnx"
    try:
        export_model(make_tiny_teacher(tmp_path), export)
    finally:
        torch.set_num_threads(before)
    src = tmp_path / "src"
    shutil.copytree(EXPORT, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))

    def run(*cmd, timeout=180):
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                              env=dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS="1"))
        assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
        return proc

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("xdistil_runtime-*.whl")
    run(sys.executable, "-m", "venv", tmp_path / "venv")
    bin_ = tmp_path / "venv" / "bin"
    run(bin_ / "pip", "install", "-q", "--disable-pip-version-check", wheel)
    probe = run(bin_ / "python", "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', "
                "'xdistil', 'xdistil_export') if u.find_spec(m)])")
    assert probe.stdout.strip() == "['xdistil_export']"

    texts = [" ".join(tiny_words(12, seed=1)), "", " ".join(tiny_words(300, seed=2))]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    run(bin_ / "xdistil-runtime", "predict", export, tmp_path / "in.txt", "--out", tmp_path / "out.jsonl",
        "--threads", "1", "-q")
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert got == Predictor(export, threads=1).annotate(texts)
    # serving needs the extra: a one-line hint, not a traceback
    proc = subprocess.run([bin_ / "xdistil-runtime", "serve", export], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "xdistil-runtime[serve]" in proc.stderr and "Traceback" not in proc.stderr
