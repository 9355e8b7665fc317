"""Loading a diffusers pipeline safely: no remote code, weights via safetensors or weights_only."""

from __future__ import annotations

import os
import re
from pathlib import Path

from synth.errors import RunError, UsageError


def pick_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"generator.device: {device!r} asked for but no CUDA device is available")
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    return torch.device(device), getattr(torch, dtype)


def load_pipeline(model_ref: str, config, dtype):
    import diffusers

    # Our own progress bar and one-line errors speak for the run; keep library chatter out.
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass

    local = Path(model_ref)
    if local.is_absolute() and not local.exists():
        raise UsageError(f"generator.model: no such folder {model_ref}")
    if local.exists() and not (local / "model_index.json").exists():
        raise UsageError(f"generator.model: {model_ref} is not a diffusers pipeline folder (no model_index.json)")
    kwargs = {"dtype": dtype, "trust_remote_code": False}
    if config.revision:
        kwargs["revision"] = config.revision
    if config.use_safetensors is not None:
        kwargs["use_safetensors"] = config.use_safetensors
    try:
        return diffusers.DiffusionPipeline.from_pretrained(model_ref, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        hint = " (HF_HUB_OFFLINE is set: only local folders and cached hub models load)" if offline else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"generator.model: cannot load diffusers pipeline {model_ref!r}: {first}{hint}") from e


def model_license(model_ref: str) -> str | None:
    """The licence from a local model card's YAML header, when there is one."""
    card = Path(model_ref) / "README.md"
    if not card.exists():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^---\s*$(.*?)^---\s*$", text, re.S | re.M)
    if not m:
        return None
    lic = re.search(r"^license:\s*(\S+)", m.group(1), re.M)
    return lic.group(1).strip("'\"") if lic else None
