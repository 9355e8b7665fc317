"""Loading a diffusers pipeline safely: no remote code, weights via safetensors or weights_only."""

from __future__ import annotations

import os
import re
from pathlib import Path

from synth.errors import RunError, UsageError
from synth.paths import model_ref


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


def resolve_model_ref(ref: str, resolve_path) -> tuple[str, bool]:
    """(where to load from, whether it is a local folder); see synth.paths.model_ref."""
    return model_ref(ref, resolve_path)


def local_problems(folder: Path) -> list[str]:
    """Why a local folder is not a loadable diffusers pipeline (empty when it looks like one)."""
    if not folder.exists():
        return [f"model: no such folder {folder}"]
    if not (folder / "model_index.json").is_file():
        return [f"model: {folder} is not a diffusers pipeline folder (no model_index.json)"]
    return []


def unet_blocks(folder: Path) -> list[str] | None:
    """Block names ("downN", "mid", "upN") from a local pipeline's unet/config.json, without
    loading anything; None when the config cannot be read."""
    import json

    try:
        cfg = json.loads((folder / "unet" / "config.json").read_text())
        down, up = len(cfg["down_block_types"]), len(cfg["up_block_types"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [f"down{i}" for i in range(down)] + ["mid"] + [f"up{i}" for i in range(up)]


def train_timesteps(folder: Path) -> int | None:
    import json

    try:
        return int(json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_pipeline(model_ref: str, config, dtype, field: str = "generator.model"):
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
        raise UsageError(f"{field}: no such folder {model_ref}")
    if local.exists() and not (local / "model_index.json").exists():
        raise UsageError(f"{field}: {model_ref} is not a diffusers pipeline folder (no model_index.json)")
    kwargs = {"dtype": dtype, "trust_remote_code": False}
    if config.revision:
        kwargs["revision"] = config.revision
    if config.variant:
        kwargs["variant"] = config.variant
    if config.use_safetensors is not None:
        kwargs["use_safetensors"] = config.use_safetensors
    try:
        return diffusers.DiffusionPipeline.from_pretrained(model_ref, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        if not local.exists() and _hub_unreachable(e):
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            why = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline else "the Hub could not be reached"
            raise RunError(
                f"{field}: {model_ref!r} is not in the local Hugging Face cache and {why}; download it once "
                f"where the Hub is reachable (huggingface-cli download {model_ref}), or set model to a local pipeline folder"
            ) from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # diffusers sometimes points at "the stacktrace above", which a one-line error does not show
        first = re.sub(r"\s*Please check out the root cause in the stacktrace above\.?", "", first)
        raise RunError(f"{field}: cannot load diffusers pipeline {model_ref!r}: {first} (rerun with --debug for the cause)") from e


def _hub_unreachable(e: BaseException) -> bool:
    """True when loading failed because the model is neither cached nor downloadable."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name, text = type(e).__name__, str(e)
        if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError", "ConnectTimeout") or "not fully cached locally" in text or "not cached locally" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


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
