"""Where a plugin's torch model runs: the manifest's `device` option ("auto": CUDA when present,
else the CPU), one rule for every plugin. Takes the torch module, so the core imports none."""

from __future__ import annotations

from typing import Any

from .protocols import Resources

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"


def torch_device(torch: Any, device: str):
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


def accelerator_resources(device: str) -> Resources:
    """A step whose model runs on ``device`` (the manifest's option): one GPU unless it is told
    to run on the CPU (or on Apple's mps, which Ray does not schedule)."""
    return Resources(gpus=0.0) if device in ("cpu", "mps") else Resources(gpus=1.0)
