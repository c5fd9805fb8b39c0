from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mastctl.devices import resolve_device
from mastctl.errors import BackendError
from mastctl.profile import GpuSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_only_the_mastctl_package(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip().splitlines()[-1:]}")
    wheel = next(tmp_path.glob("mastctl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"mastctl"}
    assert "mastctl/backends/embedders/minilm.py" in names and "mastctl/commands/detect.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "mastctl = mastctl.entry:run" in text and "[mastctl.embedders]" in text


def test_device_resolution_without_a_gpu():
    pytest.importorskip("torch")
    import torch

    assert resolve_device(None) == "cpu"
    assert resolve_device(GpuSettings(use_gpu=False, device="cuda:0")) == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device(GpuSettings()) == "cpu"  # auto falls back quietly
        with pytest.raises(BackendError, match="no CUDA GPU is available"):
            resolve_device(GpuSettings(device="cuda:1"))
    else:  # a GPU machine: auto takes the first GPU, an index past the last is an error
        assert resolve_device(GpuSettings()) == "cuda:0"
        count = torch.cuda.device_count()
        with pytest.raises(BackendError, match=f"only {count} CUDA GPU"):
            resolve_device(GpuSettings(device=f"cuda:{count}"))
