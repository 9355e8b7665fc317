"""Per-pixel features from a diffusers UNet: forward hooks on chosen blocks at chosen timesteps.

diffusers has no feature API, so we register forward hooks on ``unet.down_blocks[i]``,
``unet.mid_block`` and ``unet.up_blocks[i]`` and always remove them afterwards. Where the noisy
input x_t at each timestep t comes from is the spec's ``source``:

- "noised" (ddpm-segmentation): the clean image noised straight to t with one fixed noise shared
  by all images, so real and generated images are described the same way and an image's
  features do not depend on which batch it came in. One UNet pass per timestep.
- "inverted": the clean image walked up to t by deterministic DDIM inversion, on a grid that
  contains every requested t. No noise at all, so x_t stays on the path that leads back to the
  image; costs about ``inversion_steps`` passes.
- "trajectory": a generated sample's own denoising path from its initial latent, read at the
  sampler's steps nearest each requested t (the features the image was actually made from).
  Images without a latent (labelled real images) are inverted instead: the nearest equivalent.

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
    source: str = "noised"  # "noised" | "inverted" | "trajectory" (see the module docstring)
    inversion_steps: int = 20  # DDIM inversion grid points between 0 and the largest t


SOURCES = ("noised", "inverted", "trajectory")


def available_blocks(unet) -> list[str]:
    return [f"down{i}" for i in range(len(unet.down_blocks))] + ["mid"] + [f"up{i}" for i in range(len(unet.up_blocks))]


def pyramid_shapes(unet, latent_hw: tuple[int, int], spec) -> list[tuple[int, int, int]]:
    """One image's feature maps as (C, h, w), in the order extract returns them (timesteps,
    then blocks), from the UNet's config alone: a down block halves (rounding up) after all but
    the last; an up block doubles after all but the last."""
    ch = list(unet.config.block_out_channels)
    n, (h, w) = len(ch), latent_hw

    def at(k: int) -> tuple[int, int]:
        return (-(-h // 2**k), -(-w // 2**k))

    def shape(block: str) -> tuple[int, int, int]:
        if block == "mid":
            return (ch[-1], *at(n - 1))
        if block.startswith("down"):
            i = int(block[4:])
            return (ch[i], *at(min(i + 1, n - 1)))
        i = int(block[2:])
        return (ch[::-1][i], *at(max(n - 2 - i, 0)))

    return [shape(b) for _ in spec.timesteps for b in spec.blocks]


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
    if spec.source not in SOURCES:
        problems.append(f"unknown feature source {spec.source!r} (one of {', '.join(SOURCES)})")
    return problems


class BlockHooks:
    """Context manager: capture the outputs of named blocks; the hooks are removed on exit."""

    def __init__(self, unet, blocks: Sequence[str]):
        self.unet, self.blocks = unet, list(blocks)
        self.outputs: dict[str, Any] = {}
        self.handles: list = []

    def __enter__(self):
        try:
            self._register()
        except BaseException:
            self._remove()
            raise
        return self

    def _register(self) -> None:
        for b in self.blocks:
            self.handles.append(_module(self.unet, b).register_forward_hook(self._keeper(b)))

    def _keeper(self, block: str):
        def keep(module, args, output):
            self.outputs[block] = _hidden(output)

        return keep

    def _remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __exit__(self, *exc) -> None:
        self._remove()


def _hidden(output):
    # down blocks return (hidden, residuals); the others the hidden states
    return output[0] if isinstance(output, tuple) else output


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


def split_prediction(out, xt, a, prediction_type: str):
    """(eps, x0) from a UNet output at x_t whose cumulative alpha is ``a``."""
    if prediction_type == "epsilon":
        return out, (xt - (1 - a).sqrt() * out) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * out + (1 - a).sqrt() * xt, a.sqrt() * xt - (1 - a).sqrt() * out
    if prediction_type == "sample":
        return (xt - a.sqrt() * out) / (1 - a).sqrt().clamp(min=1e-8), out
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def ddim_invert(unet, alphas_cumprod, x0, grid: Sequence[int], prediction_type: str, unet_kwargs=None, visit=None):
    """Walk clean ``x0`` up the timesteps of ``grid`` (ascending, from 0) by deterministic DDIM
    inversion: x_next = sqrt(a_next) x0_pred + sqrt(1 - a_next) eps(x_t, t). ``visit(t)`` runs
    after the UNet pass at each grid point (feature capture). Returns x at the last grid point."""
    import torch

    x = x0.float()
    for i, t in enumerate(grid):
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if i + 1 == len(grid) and visit is None:
            break  # nothing reads the last point's UNet pass
        out = unet(x.to(x0.dtype), tt, **(unet_kwargs or {})).sample.float()
        if visit is not None:
            visit(int(t))
        if i + 1 == len(grid):
            break
        a = alphas_cumprod[int(t)].to(x.device, torch.float32)
        a_next = alphas_cumprod[int(grid[i + 1])].to(x.device, torch.float32)
        eps, x0_pred = split_prediction(out, x, a, prediction_type)
        x = a_next.sqrt() * x0_pred + (1 - a_next).sqrt() * eps
    return x


def inversion_grid(timesteps: Sequence[int], steps: int) -> list[int]:
    """Ascending grid from 0 to max(timesteps): ``steps`` even intervals plus every requested t."""
    import numpy as np

    top = max(timesteps)
    even = np.linspace(0, top, max(steps, 1) + 1).round().astype(int).tolist()
    return sorted(set(even) | {int(t) for t in timesteps})


def extract_inverted(unet, alphas_cumprod, x0, spec: FeatureSpec, prediction_type: str, unet_kwargs=None) -> list:
    """Feature pyramid of clean ``x0`` read along its DDIM inversion (source "inverted")."""
    import torch

    wanted, got = set(spec.timesteps), {}
    with torch.inference_mode(), BlockHooks(unet, spec.blocks) as hooks:

        def keep(t):
            if t in wanted:
                got[t] = [hooks.outputs[b].float() for b in spec.blocks]

        ddim_invert(unet, alphas_cumprod, x0, inversion_grid(spec.timesteps, spec.inversion_steps), prediction_type, unet_kwargs, keep)
    return [f for t in spec.timesteps for f in got[t]]


def nearest_steps(schedule: Sequence[int], wanted: Sequence[int]) -> dict[int, int]:
    """For each wanted t, the sampler timestep nearest to it (requested t -> scheduled t)."""
    sched = [int(t) for t in schedule]
    return {int(t): min(sched, key=lambda s: (abs(s - int(t)), s)) for t in wanted}


class TrajectoryCapture(BlockHooks):
    """Context manager: block outputs at chosen sampler timesteps of a denoising loop.

    A forward pre-hook on the UNet reads each call's timestep; block hooks keep their output
    when it is one of ``steps``. Under classifier-free guidance the UNet sees [uncond, cond]
    stacked; the last ``batch`` rows (the conditional half) are kept.
    """

    def __init__(self, unet, blocks: Sequence[str], steps: set[int], batch: int):
        super().__init__(unet, blocks)
        self.steps, self.batch = set(steps), batch
        self.current: int | None = None
        self.got: dict[int, dict[str, Any]] = {}

    def done(self) -> bool:
        return all(len(self.got.get(t, {})) == len(self.blocks) for t in self.steps)

    def _register(self) -> None:
        self.handles.append(self.unet.register_forward_pre_hook(self._timestep, with_kwargs=True))
        super()._register()

    def _timestep(self, module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.current = int(t.flatten()[0]) if hasattr(t, "flatten") else int(t)

    def _keeper(self, block: str):
        def keep(module, args, output):
            if self.current in self.steps:
                self.got.setdefault(self.current, {})[block] = _hidden(output)[-self.batch :].float()

        return keep

    def pyramid(self, mapping: dict[int, int], timesteps: Sequence[int]) -> list:
        return [self.got[mapping[int(t)]][b] for t in timesteps for b in self.blocks]
