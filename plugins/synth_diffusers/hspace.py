"""h-space: a UNet block's output (the bottleneck, "mid", by default), where Asyrp and its
successors find semantic directions that one shift applies to every image alike. A shift is added
to the block's output while the sampler is in a chosen part of its steps (``start`` to ``until``,
shares of the steps, noisiest first): the early steps decide what the image shows (where shapes
are, how many), the later ones how it looks, so a later window edits looks and keeps the layout.
A zero shift adds exact zeros, so the images are decode's byte for byte.

The gradient of an objective of the decoded image with respect to each sample's own shift is
taken through the whole sampling loop (the family's own loop, plain torch; for Stable Diffusion
through the VAE decoder too, so its memory grows with the steps: few steps, small images, or a
large GPU): the candidates of ``synth discover`` are the principal components of such gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth.errors import UsageError

from .features import _module, available_blocks


@dataclass(frozen=True)
class HSpaceSpec:
    block: str = "mid"  # "mid" or "upN": blocks whose output is one tensor
    start: float = 0.0  # the shift applies from this share of the sampling steps (noisiest first) ...
    until: float = 0.5  # ... up to this share


def spec_of(unet, options: dict[str, Any]) -> HSpaceSpec:
    unknown = set(options) - {"block", "start", "until"}
    if unknown:
        raise UsageError(f"hspace: unknown option {sorted(unknown)[0]!r} (block, start, until)")
    spec = HSpaceSpec(block=str(options.get("block") or "mid"), start=float(options.get("start", 0.0)), until=float(options.get("until", 0.5)))
    allowed = [b for b in available_blocks(unet) if not b.startswith("down")]
    if spec.block not in allowed:
        raise UsageError(f"hspace.block: {spec.block!r} is not one of this UNet's {', '.join(allowed)} (a down block's output is a tuple)")
    if not 0.0 <= spec.start < spec.until <= 1.0:
        raise UsageError(f"hspace: start {spec.start:g} and until {spec.until:g} must satisfy 0 <= start < until <= 1")
    return spec


def edited_steps(timesteps, spec: HSpaceSpec) -> frozenset[int]:
    """The sampler timesteps the shift applies at, noisiest first: from floor(start * n) up to
    ceil(until * n), at least one."""
    ts = [int(t) for t in timesteps]
    first = min(int(math.floor(spec.start * len(ts))), len(ts) - 1)
    return frozenset(ts[first : max(first + 1, math.ceil(spec.until * len(ts)))])


class Shift:
    """Context manager: adds ``shift`` (B, *shape), row by row, to the block's output whenever the
    UNet is called at an edited timestep (a UNet called on a batch of k B rows, as classifier-free
    guidance stacks them, gets the shift k times); ``rms`` collects the block's RMS there."""

    def __init__(self, unet, spec: HSpaceSpec, shift, edited: frozenset[int], keep: int = 0, keep_last: bool = False):
        self.unet, self.block, self.shift, self.edited = unet, _module(unet, spec.block), shift, edited
        self.t: int | None = None
        self.rms: list[float] = []
        # with keep = B: B rows' outputs at each edited step are kept, the conditional ones: the
        # first (a pixel model's conditional pass runs alone, first) or, with keep_last, the last
        # (Stable Diffusion stacks the unconditional rows before them)
        self.keep, self.keep_last = keep, keep_last
        self.kept: list = []
        self._kept_at: set[int] = set()
        self.handles: list = []

    def __enter__(self):
        def before(module, args, kwargs):
            t = args[1] if len(args) > 1 else kwargs.get("timestep")
            self.t = int(t.flatten()[0]) if hasattr(t, "flatten") else int(t)

        def after(module, args, out):
            if self.t not in self.edited:
                return None
            self.rms.append(float(out.detach().float().pow(2).mean().sqrt()))
            if self.keep and self.t not in self._kept_at:  # a step's first call: the conditional pass
                self._kept_at.add(self.t)
                rows = out[-self.keep :] if self.keep_last else out[: self.keep]
                self.kept.append(rows.detach().float().cpu())
            if self.shift is None:
                return None
            s = self.shift.to(out.device, out.dtype)
            if out.shape[0] != s.shape[0]:
                s = s.repeat(out.shape[0] // s.shape[0], *([1] * (s.dim() - 1)))
            return out + s

        self.handles = [self.unet.register_forward_pre_hook(before, with_kwargs=True), self.block.register_forward_hook(after)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


def block_shape(gen, spec: HSpaceSpec) -> tuple[int, ...]:
    """One sample's block output shape, read from one UNet call on a zero input."""
    torch = gen.torch
    unet = gen.pipe.unet
    seen: list = []
    handle = _module(unet, spec.block).register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape[1:])))
    try:
        with torch.inference_mode():
            z = torch.zeros((1, *gen.latent_shape()), device=gen.device, dtype=gen.dtype)
            t = gen._fresh_scheduler().timesteps[0]
            unet(z, t, **gen.family.unet_kwargs([gen.condition(0)]))
    finally:
        handle.remove()
    return seen[0]


def gradients(gen, z, conditions: list[dict], gens, spec: HSpaceSpec, objective) -> tuple[np.ndarray, float]:
    """Per-sample gradients of ``objective`` at a zero shift, through the sampling loop."""
    torch = gen.torch
    sched = gen._fresh_scheduler()
    unet = gen.pipe.unet
    delta = torch.zeros((z.shape[0], *gen.hspace_shape(spec)), device=gen.device, dtype=torch.float32, requires_grad=True)
    with torch.inference_mode(False), torch.enable_grad():
        with Shift(unet, spec, delta, edited_steps(sched.timesteps, spec)) as hook:
            x = gen.family.sample(sched, z, conditions, gens)
        pixels = gen.family.clean_pixels(x)  # a latent model's through its VAE decoder
        (grad,) = torch.autograd.grad(objective(pixels).sum(), delta)
    return grad.detach().float().cpu().numpy(), float(np.mean(hook.rms)) if hook.rms else 1.0


def activations(gen, z, conditions: list[dict], gens, spec: HSpaceSpec) -> tuple[np.ndarray, float]:
    """Each sample's block output averaged over the edited steps of its own sampling path (the
    conditional pass), and the block's RMS there; the path stops after the last edited step."""
    sched = gen._fresh_scheduler()
    edited = edited_steps(sched.timesteps, spec)
    with Shift(gen.pipe.unet, spec, None, edited, keep=len(z), keep_last=gen.family.stacks_guidance()) as hook:
        gen.family.sample(sched, z, conditions, gens, steps=sorted(edited))
    acts = gen.torch.stack(hook.kept).mean(0).numpy()
    return acts, float(np.mean(hook.rms)) if hook.rms else 1.0
