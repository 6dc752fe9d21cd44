"""What users install is the wheel, not the editable checkout that `make setup` and CI use.

The wheels (conftest `wheels`, built once a session from the checkout's files) must carry every
module the checkout has, and the `xdistil` wheel, installed non-editable into a fresh venv, must
run: `xdistil --help`, `xdistil config show demo`, `xdistil-runtime --help` and one tiny
`xdistil run`. A hand-kept package list once left `xdistil.commands` and `xdistil.run` out of the
wheel; the editable install hid it.

The venv reuses the set-up's dependencies (torch, transformers, ...) instead of installing them
again: a `.pth` file puts the set-up's site-packages *after* the venv's own. Python runs no `.pth`
file of a folder added that way, so the editable install's finder there stays off; the test still
checks that every package is imported from the venv's site-packages, i.e. from the wheel.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wheels import checkout_files, console_scripts, wheel_files

# What each wheel must install, as git pathspecs and the folder they install to; package data
# as pyproject.toml's [tool.setuptools.package-data] declares it (presets, the language registry).
MAIN = {"xdistil/**.py": "xdistil", "xdistil/presets/*.yaml": "xdistil", "languages/**.py": "xdistil_languages",
        "languages/*.toml": "xdistil_languages", "export/**.py": "xdistil_export"}
RUNTIME = {"export/**.py": "xdistil_export"}


def _expected(specs: dict[str, str]) -> set[str]:
    """The checkout's files under ``specs``, each at its path inside the installed package."""
    out = set()
    for spec, package in specs.items():
        folder = spec.split("/")[0]
        out |= {package + rel[len(folder):] for rel in checkout_files(spec)}
    return out


@pytest.mark.parametrize("name, specs, known", [
    ("xdistil", MAIN, {"xdistil/commands/__init__.py", "xdistil/run/layout.py", "xdistil/presets/demo.yaml",
                       "xdistil_languages/registry.toml", "xdistil_export/cli.py"}),
    ("xdistil-runtime", RUNTIME, {"xdistil_export/__init__.py", "xdistil_export/cli.py"}),
])
def test_wheel_carries_every_module_of_the_checkout_and_nothing_else(wheels, name, specs, known):
    expected = _expected(specs)
    assert known <= expected, expected  # the pathspecs do find the checkout's files
    got = wheel_files(wheels[name])
    assert not expected - got, f"{name} wheel misses {sorted(expected - got)}"
    assert not got - expected, f"{name} wheel carries files the checkout lacks: {sorted(got - expected)}"


def test_wheels_declare_their_commands(wheels):
    assert console_scripts(wheels["xdistil"]) == {"xdistil": "xdistil.cli:main",
                                                  "xdistil-runtime": "xdistil_export.cli:main"}
    assert console_scripts(wheels["xdistil-runtime"]) == {"xdistil-runtime": "xdistil_export.cli:main"}


def _run(*cmd, code: int = 0, timeout: int = 120, **kw) -> subprocess.CompletedProcess:
    # PYTHONPATH cleared: nothing may reach the checkout except through what is installed
    env = dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, **kw)
    assert proc.returncode == code, f"{cmd}: exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def venv(wheels, tmp_path_factory) -> Path:
    """A fresh venv with the `xdistil` wheel installed (not editable) and the set-up's dependencies reachable."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    # this set-up's pip installs into the venv (--python): the venv needs no pip of its own
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
         "-q", wheels["xdistil"])
    purelib = _run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # written after the install, so pip never saw the set-up's (editable) xdistil as installed here
    (Path(purelib.stdout.strip()) / "_setup_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


def test_installed_wheel_is_what_runs(venv, tmp_path):
    probe = _run(venv / "bin" / "python", "-c", "import json, importlib, sysconfig; print(json.dumps({m: "
                 "importlib.import_module(m).__file__ for m in ('xdistil', 'xdistil.commands', 'xdistil.run', "
                 "'xdistil.presets', 'xdistil_export', 'xdistil_languages', 'torch')} | "
                 "{'site': sysconfig.get_paths()['purelib']}))", cwd=tmp_path)
    files = json.loads(probe.stdout)
    site_dir = Path(files.pop("site"))
    torch_file = Path(files.pop("torch"))
    assert site_dir.is_relative_to(venv)
    for module, file in files.items():
        assert Path(file).is_relative_to(site_dir), f"{module} imported from {file}, not from the wheel"
    assert not torch_file.is_relative_to(venv)  # the dependencies: the set-up's, not installed again


def test_installed_commands_help_and_config_show(venv, tmp_path, capsys):
    from xdistil.cli import main

    out = _run(venv / "bin" / "xdistil", "--help", cwd=tmp_path).stdout
    assert all(cmd in out for cmd in ("run", "distill", "export", "config")), out
    assert "predict" in _run(venv / "bin" / "xdistil-runtime", "--help", cwd=tmp_path).stdout
    shown = _run(venv / "bin" / "xdistil", "config", "show", "demo", cwd=tmp_path).stdout
    assert main(["config", "show", "demo"]) == 0  # the checkout's own answer, in-process
    assert yaml.safe_load(shown) == yaml.safe_load(capsys.readouterr().out)
    assert yaml.safe_load(shown)["data"]["languages"] == ["de", "ar", "hi"]  # the preset file was shipped


def test_tiny_run_through_the_installed_wheel(venv, tmp_path):
    """One `xdistil run` (teacher, label, distill, evaluate) on a tiny random teacher: seconds."""
    from test_pipeline import small_cfg
    from tiny import make_tiny_teacher

    from xdistil.config import to_dict

    stage = {"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False}
    cfg = small_cfg(tmp_path, make_tiny_teacher(tmp_path), teacher={"epochs": 1},
                    distill={"stages": [stage], "max_steps_per_epoch": 2})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)), encoding="utf-8")
    _run(venv / "bin" / "xdistil", "run", "--config", tmp_path / "cfg.yaml", "--out", tmp_path / "run", "-q",
         cwd=tmp_path, timeout=300)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in summary["models"]] == ["teacher", "stage1-hard"]
    assert all("xx" in m["f1"] for m in summary["models"])
