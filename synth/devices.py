"""Where a plugin's torch model runs: the manifest's `device` option ("auto": CUDA when present,
else the CPU), one rule for every plugin. Takes the torch module, so the core imports none."""

from __future__ import annotations

from typing import Any

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"


def torch_device(torch: Any, device: str):
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
