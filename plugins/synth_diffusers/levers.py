"""What a GPU user turns on a loaded pipeline: where the weights live (on the device, or offloaded
to the CPU), memory levers (VAE slicing and tiling, attention slicing), torch.compile, and
adapters (LoRA, textual inversion) from local files. Checked before anything loads where a
manifest can say it is wrong; each failure is one line naming the field."""

from __future__ import annotations

import hashlib
from pathlib import Path

from synth.errors import UsageError


def check(config, folder: Path | None, resolve_path) -> list[str]:
    """Problems a manifest has before anything loads (``folder``: the local pipeline, if any)."""
    problems = []
    if config.offload and config.device.startswith(("cpu", "mps")):
        problems.append(f"offload: moving weights between the CPU and the GPU needs a CUDA device (device is {config.device!r})")
    if config.compile:
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            import torch

            if not hasattr(torch, "compile"):
                problems.append(f"compile: torch {torch.__version__} has no torch.compile (it came with torch 2.0)")
    if config.variant and folder is not None and not any(folder.glob(f"*/*.{config.variant}.*")):
        problems.append(f"variant: {folder} has no {config.variant!r} weights (files named *.{config.variant}.safetensors)")
    for field in ("lora", "textual_inversion"):
        for i, item in enumerate(getattr(config, field)):
            if not resolve_path(item.path).is_file():
                problems.append(f"{field}[{i}].path: no such file {resolve_path(item.path)}")
    return problems


def place(gen) -> None:
    """Put the pipeline on its device, or offload it (CUDA only: the weights stay on the CPU)."""
    cfg, pipe = gen.config, gen.pipe
    if cfg.offload is None:
        pipe.to(gen.device)
    else:
        if gen.device.type != "cuda":
            raise UsageError(f"generator.offload: moving weights between the CPU and the GPU needs a CUDA device (the generator runs on {gen.device})")
        (pipe.enable_model_cpu_offload if cfg.offload == "model" else pipe.enable_sequential_cpu_offload)(device=gen.device)
    if cfg.vae_slicing:
        pipe.vae.enable_slicing()
    if cfg.vae_tiling:
        pipe.vae.enable_tiling()
    if cfg.attention_slicing:
        pipe.enable_attention_slicing()
    if cfg.compile:
        torch = gen.torch
        if not hasattr(torch, "compile"):
            raise UsageError(f"generator.compile: torch {torch.__version__} has no torch.compile")
        # in place: the module keeps its identity, config and submodules (feature hooks attach as before)
        pipe.unet.compile()


def load_adapters(gen) -> None:
    """LoRA weights (each under its own adapter name, at its scale) and textual inversions."""
    cfg, pipe = gen.config, gen.pipe
    if (cfg.lora or cfg.textual_inversion) and gen.kind != "text2image":
        field = "lora" if cfg.lora else "textual_inversion"
        raise UsageError(f"generator.{field}: adapters load into a text-to-image pipeline (Stable Diffusion); {cfg.model} is {gen.kind}")
    names = []
    for i, item in enumerate(cfg.lora):
        path = gen.context.resolve_path(item.path)
        name = f"lora{i}"
        try:
            with _quiet():  # diffusers logs the failure it raises; the one-line error says it
                pipe.load_lora_weights(str(path), adapter_name=name)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            raise UsageError(f"generator.lora[{i}]: {path} does not fit {cfg.model}: {_mismatch(e)}") from None
        if not _applied(pipe, name):
            raise UsageError(f"generator.lora[{i}]: {path} does not fit {cfg.model}: none of its weights name a layer of the model")
        names.append(name)
    if names:
        pipe.set_adapters(names, adapter_weights=[item.scale for item in cfg.lora])
    for i, item in enumerate(cfg.textual_inversion):
        path = gen.context.resolve_path(item.path)
        try:
            pipe.load_textual_inversion(str(path), token=item.token)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            raise UsageError(f"generator.textual_inversion[{i}]: cannot load {path}: {_first_line(e)}") from None


def _applied(pipe, name: str) -> bool:
    """Whether an adapter of this name reached any of the pipeline's models."""
    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        if model is not None and name in (getattr(model, "peft_config", None) or {}):
            return True
    return False


def fingerprint(config, resolve_path) -> dict:
    """What the adapters and weight variant add to the generator's identity: each file's hash."""
    out: dict = {}
    if config.variant:
        out["variant"] = config.variant
    for field in ("lora", "textual_inversion"):
        items = getattr(config, field)
        if items:
            out[field] = [
                {**item.model_dump(), "sha256": hashlib.sha256(resolve_path(item.path).read_bytes()).hexdigest()} for item in items
            ]
    return out


class _quiet:
    def __enter__(self):
        import diffusers

        self.logging = diffusers.utils.logging
        self.level = self.logging.get_verbosity()
        self.logging.set_verbosity(self.logging.CRITICAL)

    def __exit__(self, *exc):
        self.logging.set_verbosity(self.level)


def _mismatch(e: BaseException) -> str:
    """What torch's load_state_dict says, in one line: how many weights have another shape
    than the model's layer, and the first of them."""
    import re

    sizes = re.findall(r"size mismatch for (\S+): copying a param with shape (torch.Size\(\[[^\]]*\]\)) from checkpoint, the shape in current model is (torch.Size\(\[[^\]]*\]\))", str(e))
    if sizes:
        name, theirs, ours = sizes[0]
        return f"{len(sizes)} of its weights have another shape than the model's layers (first: {name.rstrip(':')}, {theirs[11:-1]} against {ours[11:-1]})"
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
