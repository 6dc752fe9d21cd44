"""Nothing under export/ imports torch, transformers or xdistil: every module is imported with them blocked."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny import import_blocker, tiny_words

REPO = Path(__file__).resolve().parents[1]
EXPORT = REPO / "export"
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


def _doc_runtime_lines() -> list[str]:
    """The ``xdistil-runtime`` command lines the README and the deployment guide show (comments cut)."""
    lines = []
    for doc in (REPO / "README.md", REPO / "docs" / "deployment.md"):
        for line in doc.read_text(encoding="utf-8").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("xdistil-runtime "):
                lines.append(line)
    return lines


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """A real export (fp32 + int8) of a tiny random teacher."""
    import torch
    from tiny import make_tiny_teacher

    from xdistil.deployable import export_model

    tmp = tmp_path_factory.mktemp("export")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        export_model(make_tiny_teacher(tmp), tmp / "onnx", int8=True, int8_min_agreement=0.0)  # random weights
    finally:
        torch.set_num_threads(before)
    return tmp / "onnx"


def test_readme_runtime_line_runs_in_the_set_up_as_a_shell_runs_it(tiny_export, tmp_path):
    """`make setup` gives the `xdistil-runtime` command (the main distribution declares it too), so
    the README quick start's runtime line works as written: run by bash with the set-up's bin/ first
    on PATH, on a real export -- a new process, as a user's shell would, not called in-process."""
    from xdistil_export.runtime import Predictor

    bin_ = Path(sys.executable).parent  # .venv/bin under `make test`
    assert (bin_ / "xdistil-runtime").is_file(), f"{bin_}: no xdistil-runtime command (make setup installs it)"
    lines = [x.strip() for x in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
             if x.strip().startswith("xdistil-runtime predict ")]
    assert lines, "the README shows no `xdistil-runtime predict` line"
    texts = [" ".join(tiny_words(12, seed=1)), " ".join(tiny_words(300, seed=2))]
    for line in lines:
        argv = shlex.split(line, comments=True)
        # the export and the input where the line expects them, relative to the shell's folder
        (export_arg,) = [a for a in argv if a.startswith("runs/")]
        (input_arg,) = [a for a in argv if a.endswith(".txt")]
        shutil.copytree(tiny_export, tmp_path / export_arg, dirs_exist_ok=True)
        (tmp_path / input_arg).write_text("\n".join(texts) + "\n", encoding="utf-8")
        proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env=dict(os.environ, PATH=f"{bin_}{os.pathsep}/usr/bin{os.pathsep}/bin", PYTHONPATH=""))
        assert proc.returncode == 0, f"{line}: exit {proc.returncode}: {proc.stderr[-2000:]}"
        precision = argv[argv.index("--precision") + 1] if "--precision" in argv else "fp32"
        want = Predictor(tiny_export, precision=precision, threads=1).annotate(texts)
        assert [json.loads(x) for x in proc.stdout.splitlines()] == want, line


def test_runtime_distribution_installs_without_torch_and_predicts(tiny_export, wheels, tmp_path):
    """Install the `xdistil-runtime` wheel (built from export/) into a fresh venv, and run what
    the docs show and what users get wrong, as a deployment would.

    - every ``xdistil-runtime`` line of README.md and docs/deployment.md, on a real export
      (predict: output equal to the `Predictor`'s; serve: the hint to install the extra, then,
      with the extra installed, a server that answers /health);
    - one-line errors (exit 2, no traceback) for a directory as input, a missing or invalid
      ``tokenizer.json``, a damaged ``export_manifest.json`` (naming the file), a changed model;
    - a gzipped input is read; ``| head`` stops the command quietly.

    The wheel comes from the conftest fixture `wheels` (built once a session, offline; its contents
    are checked in tests/test_wheel.py). The venv gets its dependencies from the package index
    (onnxruntime, tokenizers, numpy, regex; fastapi and uvicorn for the serve line); it has no
    torch, transformers or xdistil. Takes about 30 s.
    """
    import gzip
    import signal
    import socket
    import time
    import urllib.request

    from xdistil_export.runtime import Predictor

    export = tiny_export
    env = dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS="1")

    def run(*cmd, timeout=180, code=0):
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                              env=env)
        assert proc.returncode == code, f"{cmd}: {proc.returncode}: {proc.stderr[-3000:]}"
        return proc

    wheel = wheels["xdistil-runtime"]
    run(sys.executable, "-m", "venv", tmp_path / "venv")
    bin_ = tmp_path / "venv" / "bin"
    runtime = bin_ / "xdistil-runtime"
    run(bin_ / "pip", "install", "-q", "--disable-pip-version-check", wheel)
    probe = run(bin_ / "python", "-c", "import importlib.util as u; print([m for m in ('torch', 'transformers', "
                "'xdistil', 'xdistil_export') if u.find_spec(m)])")
    assert probe.stdout.strip() == "['xdistil_export']"

    texts = [" ".join(tiny_words(12, seed=1)), "", " ".join(tiny_words(300, seed=2))]
    expected = Predictor(export, threads=1).annotate(texts)
    expected_int8 = Predictor(export, precision="int8", threads=1).annotate(texts)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")

    # the docs' own lines, on this export and this text
    doc_lines = _doc_runtime_lines()
    assert any(" predict " in x for x in doc_lines) and any(" serve " in x for x in doc_lines), doc_lines
    serve_lines = []
    for line in doc_lines:
        argv = shlex.split(line)
        argv = [str(export) if a.startswith("runs/") else str(tmp_path / "in.txt") if a.endswith(".txt") else a
                for a in argv]
        if argv[1] == "serve":
            proc = run(bin_ / argv[0], *argv[1:], code=2)  # no serve extra yet: a one-line hint
            assert "xdistil-runtime[serve]" in proc.stderr and "Traceback" not in proc.stderr
            serve_lines.append(argv)
            continue
        proc = run(bin_ / argv[0], *argv[1:], "--threads", "1", "-q")
        want = expected_int8 if "--precision" in argv and argv[argv.index("--precision") + 1] == "int8" else expected
        assert [json.loads(x) for x in proc.stdout.splitlines()] == want, line
    run(runtime, "predict", export, tmp_path / "in.txt", "--out", tmp_path / "out.jsonl", "--threads", "1", "-q")
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert got == expected

    # gzip is read (detected by its bytes), CR line ends split lines
    (tmp_path / "in.gz").write_bytes(gzip.compress("\r".join(texts).encode("utf-8")))
    proc = run(runtime, "predict", export, tmp_path / "in.gz", "--threads", "1")
    assert [json.loads(x) for x in proc.stdout.splitlines()] == expected

    # mistakes: one line naming the file, exit 2
    def fails(folder, path, words):
        proc = run(runtime, "predict", folder, path, "-q", code=2)
        assert proc.stderr.startswith("xdistil-runtime: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert words in proc.stderr, proc.stderr

    fails(export, tmp_path, "is a directory")
    damaged = []
    for name, damage, words in [
        ("no-tokenizer", lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json: no such file"),
        ("bad-tokenizer", lambda d: (d / "tokenizer.json").write_text("{"), "tokenizer.json"),
        ("bad-manifest", lambda d: (d / "export_manifest.json").write_text("{"), "export_manifest.json: not valid JSON"),
        ("changed-model", lambda d: (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:-100] + b"x" * 100),
         "model.onnx: the file changed since export"),
    ]:
        broken = tmp_path / name
        shutil.copytree(export, broken)
        damage(broken)
        fails(broken, tmp_path / "in.txt", words)
        damaged.append((broken, words))

    # `| head`: the reader goes away, the command stops quietly
    (tmp_path / "many.txt").write_text("".join(f"Anna wohnt in Berlin seit {i} Jahren .\n" for i in range(5000)),
                                       encoding="utf-8")
    proc = run("bash", "-c", f"{shlex.quote(str(runtime))} predict {shlex.quote(str(export))} --precision fp32 "
               f"{shlex.quote(str(tmp_path / 'many.txt'))} -q | head -n 2")
    assert len(proc.stdout.splitlines()) == 2 and proc.stderr == "", proc.stderr

    # the serve line, with the extra installed: damaged exports fail in one line, a good one answers
    run(bin_ / "pip", "install", "-q", "--disable-pip-version-check", "fastapi>=0.110", "uvicorn>=0.29", timeout=300)
    for broken, words in damaged:
        proc = run(runtime, "serve", broken, "--port", "1", code=2)
        assert proc.stderr.startswith("xdistil-runtime: error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert words in proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = serve_lines[0]
    argv = argv[: argv.index("--port")] + ["--port", str(port)] if "--port" in argv else argv + ["--port", str(port)]
    server = subprocess.Popen([str(bin_ / argv[0]), *argv[1:], "--threads", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1][-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert json.load(r)["status"] == "ok"
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
