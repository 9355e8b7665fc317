"""h-space: a UNet block's output (the bottleneck, "mid", by default), where Asyrp and its
successors find semantic directions that one shift applies to every image alike. A shift is added
to the block's output while the sampler is in a chosen part of its steps (``start`` to ``until``,
shares of the steps, noisiest first): the early steps decide what the image shows (where shapes
are, how many), the later ones how it looks, so a later window edits looks and keeps the layout.
A zero shift adds exact zeros, so the images are decode's byte for byte.

``block = "condition"``: not a block's output but the conditioning the UNet's cross-attention
reads (a tag model's tag tokens, Stable Diffusion's prompt embedding), shifted in the conditional
pass only (the prompt is edited, not the unconditional side of guidance). Baumann et al. (2024)
find attribute directions in a text encoder's token embeddings; for a model conditioned on what
its images show (the kinds of shape), a shift there changes what is shown (a square's token pulled
harder or less), where a block's output holds where things are as well as what they are.

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


CONDITION = "condition"  # the block name of the conditioning (cross-attention's input)


@dataclass(frozen=True)
class HSpaceSpec:
    block: str = "mid"  # "mid" or "upN": blocks whose output is one tensor; or CONDITION
    start: float = 0.0  # the shift applies from this share of the sampling steps (noisiest first) ...
    until: float = 0.5  # ... up to this share


def spec_of(unet, options: dict[str, Any]) -> HSpaceSpec:
    unknown = set(options) - {"block", "start", "until"}
    if unknown:
        raise UsageError(f"hspace: unknown option {sorted(unknown)[0]!r} (block, start, until)")
    spec = HSpaceSpec(block=str(options.get("block") or "mid"), start=float(options.get("start", 0.0)), until=float(options.get("until", 0.5)))
    allowed = [b for b in available_blocks(unet) if not b.startswith("down")]
    if getattr(unet.config, "cross_attention_dim", None):  # a UNet that reads a conditioning
        allowed.append(CONDITION)
    if spec.block not in allowed:
        why = " (a down block's output is a tuple)" if spec.block.startswith("down") else (
            " (this model has no conditioning: an unconditional UNet)" if spec.block == CONDITION else "")
        raise UsageError(f"hspace.block: {spec.block!r} is not one of this UNet's {', '.join(allowed)}{why}")
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


class ConditionShift(Shift):
    """Shift of the conditioning (``block = "condition"``): adds ``shift`` (B, tokens, dim) to the
    conditional rows of the UNet's ``encoder_hidden_states`` at edited timesteps: the step's first
    call (a pixel model's conditional pass runs alone, first) or, with stacked guidance, the last B
    rows. ``rms`` and ``kept`` read those rows."""

    def __init__(self, unet, spec: HSpaceSpec, shift, edited: frozenset[int], keep: int = 0, stacked: bool = False):
        self.unet, self.block, self.shift, self.edited = unet, None, shift, edited
        self.t: int | None = None
        self.rms, self.kept, self.handles = [], [], []
        self.keep, self.stacked = keep, stacked
        self._seen: set[int] = set()

    def __enter__(self):
        import torch

        def before(module, args, kwargs):
            t = args[1] if len(args) > 1 else kwargs.get("timestep")
            t = int(t.flatten()[0]) if hasattr(t, "flatten") else int(t)
            states = kwargs.get("encoder_hidden_states")
            if t not in self.edited or states is None or (not self.stacked and t in self._seen):
                return None
            self._seen.add(t)
            rows = (self.shift.shape[0] if self.shift is not None else self.keep) or states.shape[0]
            cond = states[-rows:] if self.stacked else states
            self.rms.append(float(cond.detach().float().pow(2).mean().sqrt()))
            if self.keep:
                self.kept.append(cond.detach().float().cpu())
            if self.shift is None:
                return None
            s = self.shift.to(states.device, states.dtype)
            if self.stacked and states.shape[0] > s.shape[0]:  # the unconditional rows stay as they are
                s = torch.cat([s.new_zeros((states.shape[0] - s.shape[0], *s.shape[1:])), s], 0)
            return args, {**kwargs, "encoder_hidden_states": states + s}

        self.handles = [self.unet.register_forward_pre_hook(before, with_kwargs=True)]
        return self


def shifter(gen, spec: HSpaceSpec, shift, edited: frozenset[int], keep: int = 0) -> Shift:
    """The context manager that applies ``shift`` in the space ``spec`` names."""
    stacked = gen.family.stacks_guidance()
    if spec.block == CONDITION:
        return ConditionShift(gen.pipe.unet, spec, shift, edited, keep=keep, stacked=stacked)
    return Shift(gen.pipe.unet, spec, shift, edited, keep=keep, keep_last=stacked)


def block_shape(gen, spec: HSpaceSpec) -> tuple[int, ...]:
    """One sample's block output shape (or conditioning's), read from one UNet call on a zero input."""
    torch = gen.torch
    unet = gen.pipe.unet
    seen: list = []
    if spec.block == CONDITION:
        handle = unet.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["encoder_hidden_states"].shape[1:])), with_kwargs=True)
    else:
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
    delta = torch.zeros((z.shape[0], *gen.hspace_shape(spec)), device=gen.device, dtype=torch.float32, requires_grad=True)
    with torch.inference_mode(False), torch.enable_grad():
        with shifter(gen, spec, delta, edited_steps(sched.timesteps, spec)) as hook:
            x = gen.family.sample(sched, z, conditions, gens)
        pixels = gen.family.clean_pixels(x)  # a latent model's through its VAE decoder
        (grad,) = torch.autograd.grad(objective(pixels).sum(), delta)
    return grad.detach().float().cpu().numpy(), float(np.mean(hook.rms)) if hook.rms else 1.0


def activations(gen, z, conditions: list[dict], gens, spec: HSpaceSpec) -> tuple[np.ndarray, float]:
    """Each sample's block output averaged over the edited steps of its own sampling path (the
    conditional pass), and the block's RMS there; the path stops after the last edited step."""
    sched = gen._fresh_scheduler()
    edited = edited_steps(sched.timesteps, spec)
    with shifter(gen, spec, None, edited, keep=len(z)) as hook:
        gen.family.sample(sched, z, conditions, gens, steps=sorted(edited))
    acts = gen.torch.stack(hook.kept).mean(0).numpy()
    return acts, float(np.mean(hook.rms)) if hook.rms else 1.0
