"""Where a condition's tokens act: cross-attention maps (DAAM) and noise-prediction contrasts
(DiffEdit), read from a diffusers UNet.

Cross-attention is captured by attention processors that wrap the UNet's own: each computes the
layer's output exactly as before (so images are byte-identical with and without a capture) and,
while the capture is on, also the attention probabilities of its queries over the condition's
tokens, averaged over heads. Maps are upsampled to the image and summed over layers and
timesteps; the processors are restored on exit, whatever happens.

Self-attention at one resolution can be kept too (averaged over heads, layers and timesteps):
Dataset Diffusion refines a class's cross-attention by multiplying it with powers of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class AttentionSpec:
    # Sampler steps whose attention counts, as training-schedule timesteps (the nearest step of
    # the sampler's path is read); None: every step of the path. For images without a path (real
    # ones), the image is noised to each of ``noised_timesteps`` instead.
    timesteps: tuple[int, ...] | None = None
    noised_timesteps: tuple[int, ...] = (100, 200, 300, 400)  # default: these shares of a 1000-step schedule
    # Which cross-attention layers: "down", "mid", "up" (their blocks); None: all of them.
    blocks: tuple[str, ...] | None = None
    # Side of the self-attention maps to keep (e.g. 16: the 16x16 layers); 0: none.
    self_attention: int = 0
    noise_seed: int = 0


@dataclass
class AttentionMaps:
    """What ``Generator.attention`` returns, per sample: a map per class of [dataset].classes
    (zero for classes the sample's condition does not name), the null token's map, and the
    self-attention kept (or None)."""

    classes: np.ndarray  # (B, C, H, W) float32: summed attention of each class's tokens
    named: np.ndarray  # (B, C) bool: the classes the sample's condition names
    null: np.ndarray  # (B, H, W) float32: the null (tag models) or start-of-text token's share
    self_attention: np.ndarray | None = None  # (B, N, N) float32 at ``self_size``
    self_size: tuple[int, int] | None = None


_BLOCKS = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}


def _block_of(processor_name: str) -> str:
    """"down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor" -> "down"."""
    return _BLOCKS.get(processor_name.split(".", 1)[0], processor_name)


class _Store:
    """What the capture processors write into while ``active``."""

    def __init__(self, size: tuple[int, int], latent_size: tuple[int, int], keep_last: int | None, self_side: int):
        self.size, self.latent_size, self.keep_last, self.self_side = size, latent_size, keep_last, self_side
        self.active = False
        self.cross = None  # (B, S, H, W) running sum
        self.self_sum = None  # (B, N, N)
        self.self_shape: tuple[int, int] | None = None
        self.layers = 0

    def side(self, tokens: int) -> tuple[int, int]:
        """(h, w) of a layer with this many query tokens, from the latent's aspect."""
        lh, lw = self.latent_size
        f = (lh * lw / tokens) ** 0.5
        return max(1, round(lh / f)), max(1, round(lw / f))

    def add_cross(self, probs) -> None:
        import torch.nn.functional as F

        b, n, s = probs.shape
        h, w = self.side(n)
        maps = probs.permute(0, 2, 1).reshape(b, s, h, w).float()
        maps = F.interpolate(maps, size=self.size, mode="bilinear", align_corners=False)
        self.cross = maps if self.cross is None else self.cross + maps
        self.layers += 1

    def add_self(self, probs) -> None:
        b, n, _ = probs.shape
        h, w = self.side(n)
        if max(h, w) != self.self_side:
            return
        self.self_shape = (h, w)
        self.self_sum = probs.float() if self.self_sum is None else self.self_sum + probs.float()


class _CaptureProcessor:
    """Wraps a layer's processor: the same output, plus its attention probabilities when the
    store is active (mean over heads; a CFG batch keeps its last ``keep_last`` rows)."""

    def __init__(self, original, store: _Store, cross: bool):
        self.original, self.store, self.cross = original, store, cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if self.store.active and hidden_states.ndim == 3:
            import torch

            with torch.no_grad():
                self._record(attn, hidden_states, encoder_hidden_states, attention_mask)
        return out

    def _record(self, attn, hidden_states, context, attention_mask) -> None:
        if context is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        b = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        mask = attn.prepare_attention_mask(attention_mask, key.shape[1], b) if attention_mask is not None else None
        probs = attn.get_attention_scores(query, key, mask)
        probs = probs.reshape(b, attn.heads, *probs.shape[1:]).mean(1)
        if self.store.keep_last is not None:
            probs = probs[-self.store.keep_last :]
        (self.store.add_cross if self.cross else self.store.add_self)(probs)


class AttentionCapture:
    """Context manager: capture processors on the UNet's attention layers (cross-attention of the
    chosen blocks, and self-attention when its side is asked for); the originals come back on
    exit. ``active`` decides which UNet calls count (e.g. only the conditional pass)."""

    def __init__(self, unet, spec: AttentionSpec, size: tuple[int, int], latent_size: tuple[int, int], keep_last: int | None = None):
        self.unet, self.spec = unet, spec
        self.store = _Store(size, latent_size, keep_last, spec.self_attention)
        self.saved = None

    def __enter__(self):
        self.saved = dict(self.unet.attn_processors)
        wrapped = {}
        for name, proc in self.saved.items():
            cross = name.endswith("attn2.processor")
            wanted = cross and (self.spec.blocks is None or _block_of(name) in self.spec.blocks)
            wanted = wanted or (not cross and self.spec.self_attention > 0 and name.endswith("attn1.processor"))
            wrapped[name] = _CaptureProcessor(proc, self.store, cross) if wanted else proc
        if not any(isinstance(p, _CaptureProcessor) and p.cross for p in wrapped.values()):
            raise ValueError("the UNet has no cross-attention layer in the chosen blocks")
        self.unet.set_attn_processor(wrapped)
        return self

    def __exit__(self, *exc) -> None:
        self.unet.set_attn_processor(self.saved)

    @property
    def active(self) -> bool:
        return self.store.active

    @active.setter
    def active(self, on: bool) -> None:
        self.store.active = on


def class_slots(classes: Sequence[str], tags: Sequence[str]) -> list[int | None]:
    """For each class name, the token slot of the tag of that name (tags.py: slot k + 1 is tag k),
    or None when the model has no such tag."""
    return [tags.index(c) + 1 if c in tags else None for c in classes]


def prompt_slots(tokenizer, prompts: Sequence[str], classes: Sequence[str]) -> list[list[list[int]]]:
    """For each prompt and class, the token positions of the class's words in the prompt as the
    text encoder sees it (after the start-of-text token; cut at the tokenizer's length): where a
    class word sits in a prompt, e.g. "a photo of a traffic light" -> positions of "traffic",
    "light". Empty where the prompt does not hold the class's tokens in order."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
        pieces = tokenizer.convert_ids_to_tokens(ids)
        # a word starts after the start token or after a piece that ends one (CLIP's BPE marks
        # word ends with </w>): "dog" is not found inside "hotdog"
        starts = {1} | {i + 1 for i, p in enumerate(pieces) if p.endswith("</w>")}
        row = []
        for name in classes:
            word = tokenizer(name.replace("_", " "), add_special_tokens=False).input_ids
            found = [i for i in range(1, len(ids) - len(word) + 1) if word and i in starts and ids[i : i + len(word)] == word]
            row.append(list(range(found[0], found[0] + len(word))) if found else [])
        out.append(row)
    return out


def per_prompt_class(cross: np.ndarray, positions: list[list[list[int]]], named: np.ndarray) -> np.ndarray:
    """(B, S, H, W) token maps -> (B, C, H, W): each class's map is the sum over its words'
    positions in the sample's own prompt, zero where the class is not named."""
    b, _, h, w = cross.shape
    out = np.zeros((b, len(positions[0]) if positions else 0, h, w), np.float32)
    for i, row in enumerate(positions):
        for c, where in enumerate(row):
            if where and named[i, c]:
                out[i, c] = cross[i, where].sum(0)
    return out


def per_class(cross: np.ndarray, slots: Sequence[int | None], named: np.ndarray) -> np.ndarray:
    """(B, S, H, W) slot maps -> (B, C, H, W) class maps, zero where a class is not named."""
    b, _, h, w = cross.shape
    out = np.zeros((b, len(slots), h, w), np.float32)
    for c, slot in enumerate(slots):
        if slot is not None:
            out[:, c] = cross[:, slot] * named[:, c, None, None]
    return out



# -- reading maps from the diffusers generator (generator.py delegates here) -------------------


def attention_spec(gen, options: dict[str, Any]) -> AttentionSpec:
    from synth.errors import UsageError
    from synth.seeding import sample_seed

    top = gen._train_schedule().config.num_train_timesteps
    spec = AttentionSpec(
        timesteps=tuple(options["timesteps"]) if options.get("timesteps") else None,
        noised_timesteps=tuple(options.get("noised_timesteps") or (round(top * f / 1000) for f in AttentionSpec.noised_timesteps)),
        blocks=tuple(options["blocks"]) if options.get("blocks") else None,
        self_attention=int(options.get("self_attention") or 0),
        noise_seed=sample_seed(gen.context.seed, 0, "attention-noise"),
    )
    bad = [t for t in (spec.timesteps or ()) + spec.noised_timesteps if not 0 <= t < top]
    if bad:
        raise UsageError(f"attention: timestep {bad[0]} is outside 0..{top - 1} ({gen.config.model} is trained on {top} timesteps)")
    unknown = [b for b in spec.blocks or () if b not in _BLOCKS.values()]
    if unknown:
        raise UsageError(f"attention.blocks: unknown block {unknown[0]!r} (one of down, mid, up)")
    return spec


def _wanted_steps(sched_steps: list[int], timesteps) -> set[int] | None:
    from .features import nearest_steps

    return None if timesteps is None else set(nearest_steps(sched_steps, timesteps).values())


def read_attention(gen, images: np.ndarray, conditions: list[dict], spec: AttentionSpec, latents: np.ndarray | None, decode_rows) -> list:
    """One micro-batch of a tag model or Stable Diffusion: [classes (B, C, H, W), named (B, C),
    null (B, H, W), self (B, N, N) or (B, 0, 0)] as torch tensors (generator._grouped joins them).
    Stable Diffusion's class maps are its prompt's class words' tokens; its null map the
    start-of-text token's, which takes the attention no word does."""
    torch = gen.torch
    named = gen.named_classes(conditions)
    h, w = images.shape[1:3]
    _, lh, lw = gen.latent_shape()
    text = gen.vocabulary is None
    guided_rows = len(images) if text and latents is not None and gen.guidance() > 1.0 else None  # CFG stacks [uncond, cond]
    with torch.inference_mode(), AttentionCapture(gen.pipe.unet, spec, (h, w), (lh, lw), keep_last=guided_rows) as cap:
        if latents is not None:  # the sample's own path, as decode walked it
            sched = gen._fresh_scheduler()
            steps = _wanted_steps(sched.timesteps.tolist(), spec.timesteps)
            z = torch.from_numpy(np.asarray(latents, np.float32)).to(gen.device, gen.dtype)
            gens = None if decode_rows is None else gen._row_generators(decode_rows, "denoise")
            gen.family.sample(sched, z, conditions, gens, capture=cap, steps=steps)
        else:  # a real image: noised to each timestep, one conditional pass each
            from .features import shared_noise

            x0, kwargs = gen._model_space(images, conditions)
            noise = shared_noise(torch, tuple(x0.shape[1:]), spec.noise_seed).to(x0.device, torch.float32)
            alphas = gen._train_schedule().alphas_cumprod
            cap.active = True
            for t in spec.noised_timesteps:
                a = alphas[t].to(x0.device, torch.float32)
                xt = (a.sqrt() * x0.float() + (1 - a).sqrt() * noise).to(x0.dtype)
                gen.pipe.unet(xt, torch.full((len(xt),), t, device=x0.device, dtype=torch.long), **kwargs)
            cap.active = False
        store = cap.store
    cross = (store.cross / max(store.layers, 1)).cpu()
    if text:
        positions = prompt_slots(gen.pipe.tokenizer, [c.get("prompt", "") for c in conditions], gen.context.classes)
        classes = torch.from_numpy(per_prompt_class(cross.numpy(), positions, named))
    else:
        classes = torch.from_numpy(per_class(cross.numpy(), class_slots(gen.context.classes, gen.vocabulary.tags), named))
    selfs = store.self_sum / store.self_sum.sum(-1, keepdim=True) if store.self_sum is not None else torch.zeros(len(images), 0, 0)
    return [classes, torch.from_numpy(named), cross[:, 0], selfs.cpu()]


def read_contrast(gen, images: np.ndarray, conditions: list[dict], spec: AttentionSpec, latents: np.ndarray | None, decode_rows) -> list:
    """DiffEdit's region of each class: where the UNet's prediction moves when that class leaves
    the condition (a tag model: its token masked out; a class-conditional UNet2DModel: its class
    against the mean over all classes), summed over the spec's steps. Same return as
    ``read_attention``, with a zero null map and no self-attention."""
    torch = gen.torch
    classes = gen.context.classes
    b, h, w = len(images), *images.shape[1:3]
    unet = gen.pipe.unet
    named = gen.named_classes(conditions)
    slots = class_slots(classes, gen.vocabulary.tags) if gen.vocabulary is not None else None
    total = torch.zeros(b, len(classes), h, w)

    def visit(x, t):
        base = unet(x, t, **gen.family.unet_kwargs(conditions)).sample.float()
        if slots is not None:
            for c, slot in enumerate(slots):
                if slot is not None and named[:, c].any():
                    other = unet(x, t, **gen.family.unet_kwargs(conditions, without=slot - 1)).sample.float()
                    total[:, c] += ((base - other).abs().mean(1).cpu() * torch.from_numpy(named[:, c])[:, None, None])
        else:
            outs = [unet(x, t, class_labels=torch.full((b,), k, device=x.device)).sample.float() for k in range(len(classes))]
            mean = torch.stack(outs).mean(0)
            for k in range(len(classes)):
                total[:, k] += (outs[k] - mean).abs().mean(1).cpu() * torch.from_numpy(named[:, k])[:, None, None]

    with torch.inference_mode():
        if latents is not None:
            sched = gen._fresh_scheduler()
            steps = _wanted_steps(sched.timesteps.tolist(), spec.timesteps or spec.noised_timesteps)
            z = torch.from_numpy(np.asarray(latents, np.float32)).to(gen.device, gen.dtype)
            gens = None if decode_rows is None else gen._row_generators(decode_rows, "denoise")
            gen.family.sample(sched, z, conditions, gens, visit=visit, steps=steps)
        else:
            from .features import shared_noise

            x0, _ = gen._model_space(images, conditions)
            noise = shared_noise(torch, tuple(x0.shape[1:]), spec.noise_seed).to(x0.device, torch.float32)
            alphas = gen._train_schedule().alphas_cumprod
            for t in spec.noised_timesteps:
                a = alphas[t].to(x0.device, torch.float32)
                xt = (a.sqrt() * x0.float() + (1 - a).sqrt() * noise).to(x0.dtype)
                visit(xt, torch.full((b,), t, device=x0.device, dtype=torch.long))
    return [total, torch.from_numpy(named), torch.zeros(b, h, w), torch.zeros(b, 0, 0)]
