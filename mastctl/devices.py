"""Where models run: the profile's gpu_settings -> a torch device string."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mastctl.errors import BackendError

if TYPE_CHECKING:
    from mastctl.profile import GpuSettings


DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


def resolve_device(gpu: GpuSettings | None, requested: str | None = None) -> str:
    """``cpu``, ``cuda:N`` or ``mps``, for every model mastctl runs: the one place this is decided.

    ``requested`` (a command's --device) wins; otherwise the profile's gpu_settings: ``use_gpu: false``
    means the CPU, ``device: auto`` a present GPU. Asking for a GPU that is not there is an error
    (exit 4), not a silent CPU run.
    """
    import re

    from mastctl.errors import UsageError

    if requested is not None:
        if not re.fullmatch(DEVICE_PATTERN, requested):
            raise UsageError(f"--device {requested}: use auto, cpu, cuda, cuda:N or mps")
        from mastctl.profile import GpuSettings

        gpu = GpuSettings(use_gpu=requested != "cpu", device=requested)
    if gpu is None or not gpu.use_gpu or gpu.device == "cpu":
        return "cpu"
    import torch

    if gpu.device == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if gpu.device.startswith("cuda"):
        index = int(gpu.device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise BackendError(f"gpu_settings.device is {gpu.device} but no CUDA GPU is available; use auto or cpu")
        if index >= torch.cuda.device_count():
            raise BackendError(f"gpu_settings.device is {gpu.device} but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return f"cuda:{index}"
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise BackendError("gpu_settings.device is mps but Apple's Metal backend is not available; use auto or cpu")
    return "mps"
