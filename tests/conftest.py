from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # tests run in parallel (-n 2): one thread per worker (and per process it starts), or the
    # workers' BLAS and torch pools fight over the same cores
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import numpy as np
import pytest

from mastctl import registry

PLUGINS = Path(__file__).parent / "plugins"
SHARED_DATA = Path(os.environ.get("MASTCTL_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(monkeypatch, name: str):
    """bench/NAME.py imported as a module (the benches import their neighbours, nuclei_cv: bench/ on the path)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder with no MASTCTL_* variables of the caller."""
    for name in list(os.environ):
        if name.startswith("MASTCTL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def plugin(monkeypatch):
    """The third-party test plugin, visible through its entry points."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    registry.refresh()
    yield
    registry.refresh()


@pytest.fixture
def cli(capsys):
    """Run mastctl in-process: cli(*args) -> CliResult."""
    from mastctl.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_mastctl(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, plugin: bool = False) -> CliResult:
    """Run the installed console script in a subprocess (the real process exit code)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MASTCTL_")}
    if plugin:
        full_env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    exe = Path(sys.executable).with_name("mastctl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mastctl"]
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def he_like(height: int = 64, width: int = 80, seed: int = 0) -> np.ndarray:
    """A small RGB uint8 image with some structure (pinkish background, dark dots)."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = (230, 180, 210)
    img += rng.integers(0, 20, size=img.shape, dtype=np.uint8)
    for _ in range(6):
        y, x = rng.integers(5, height - 5), rng.integers(5, width - 5)
        img[y - 3 : y + 3, x - 3 : x + 3] = (70, 40, 120)
    return img
