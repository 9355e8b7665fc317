"""Per-pixel features from a diffusers UNet: forward hooks on chosen blocks at chosen timesteps.

diffusers has no feature API, so we register forward hooks on ``unet.down_blocks[i]``,
``unet.mid_block`` and ``unet.up_blocks[i]`` for one forward pass per timestep and always remove
them afterwards. An image (real or generated) is noised directly to each t with one fixed noise
shared by all images (as ddpm-segmentation does), so real and generated images are described the
same way and the features of an image do not depend on which batch it came in.

Features are returned as a *pyramid*: one map per (timestep, block) at that block's own
resolution; the consumer upsamples (synth_pixelhead.pyramid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence




@dataclass(frozen=True)
class FeatureSpec:
    blocks: tuple[str, ...]  # "mid", "upN", "downN"
    timesteps: tuple[int, ...]  # of the training schedule, e.g. 50, 150, 250 of 1000
    noise_seed: int  # the one noise shared by every image


def available_blocks(unet) -> list[str]:
    return [f"down{i}" for i in range(len(unet.down_blocks))] + ["mid"] + [f"up{i}" for i in range(len(unet.up_blocks))]


def _module(unet, block: str):
    if block == "mid":
        return unet.mid_block
    kind, i = ("up", int(block[2:])) if block.startswith("up") else ("down", int(block[4:]))
    blocks = unet.up_blocks if kind == "up" else unet.down_blocks
    if i >= len(blocks):
        raise IndexError(block)
    return blocks[i]


def check_spec(unet, num_train_timesteps: int, spec: FeatureSpec) -> list[str]:
    """Problems with a spec for this UNet, one message each (empty when it fits)."""
    problems = []
    known = available_blocks(unet)
    for b in spec.blocks:
        if b not in known:
            problems.append(f"unknown block {b!r} (this UNet has {', '.join(known)})")
    for t in spec.timesteps:
        if not 0 <= t < num_train_timesteps:
            problems.append(f"timestep {t} outside 0..{num_train_timesteps - 1}")
    return problems


class BlockHooks:
    """Context manager: capture the outputs of named blocks; the hooks are removed on exit."""

    def __init__(self, unet, blocks: Sequence[str]):
        self.unet, self.blocks = unet, list(blocks)
        self.outputs: dict[str, Any] = {}
        self.handles: list = []

    def __enter__(self) -> "BlockHooks":
        try:
            for b in self.blocks:
                self.handles.append(_module(self.unet, b).register_forward_hook(self._keeper(b)))
        except BaseException:
            self._remove()
            raise
        return self

    def _keeper(self, block: str):
        def keep(module, args, output):
            # down blocks return (hidden, residuals); the others the hidden states
            self.outputs[block] = output[0] if isinstance(output, tuple) else output

        return keep

    def _remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __exit__(self, *exc) -> None:
        self._remove()


def shared_noise(torch, shape: tuple[int, ...], seed: int):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def extract(
    unet,
    alphas_cumprod,
    x0,
    spec: FeatureSpec,
    unet_kwargs: dict | None = None,
) -> list:
    """Feature pyramid of clean model-space inputs ``x0`` (B, C, h, w).

    Returns one float32 tensor (B, C_i, h_i, w_i) per (timestep, block), timestep-major, on the
    UNet's device. ``alphas_cumprod`` is the training schedule's cumulative product.
    """
    import torch

    noise = shared_noise(torch, tuple(x0.shape[1:]), spec.noise_seed).to(x0.device, x0.dtype)
    out = []
    with torch.inference_mode(), BlockHooks(unet, spec.blocks) as hooks:
        for t in spec.timesteps:
            a = alphas_cumprod[t].to(x0.device, torch.float32)
            xt = (a.sqrt() * x0.float() + (1 - a).sqrt() * noise.float()).to(x0.dtype)
            tt = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
            hooks.outputs.clear()
            unet(xt, tt, **(unet_kwargs or {}))
            out += [hooks.outputs[b].float() for b in spec.blocks]
    return out
