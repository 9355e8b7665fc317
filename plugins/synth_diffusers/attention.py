"""Where a condition's tokens act: cross-attention maps (DAAM) and noise-prediction contrasts
(DiffEdit), read from a diffusers UNet.

Cross-attention is captured by attention processors that wrap the UNet's own: each computes the
layer's output exactly as before (so images are byte-identical with and without a capture) and,
while the capture is on, also the attention probabilities of its queries over the condition's
tokens, averaged over heads. Maps are upsampled to the image and summed over layers and
timesteps; the processors are restored on exit, whatever happens.

Self-attention at one resolution can be kept too (averaged over heads, layers and timesteps):
Dataset Diffusion refines a class's cross-attention by multiplying it with powers of it.

Attribution tokens (OVAM): a class's map can also be read for a token that is not in the
condition. Each layer's queries attend to the condition with the class's own tokens taken out and
the attribution token put in their place; its share is that class's map. The generator's path is
untouched (the token only reads), so a token can be optimised on a few labelled images, from
their captured queries alone, until its map matches their masks (``fit_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # (C, D) float32: one attribution token per class of [dataset].classes, in the condition's
    # space (NaN rows: that class is read from its own tokens); None: every class from its own.
    tokens: Any = field(default=None, compare=False)


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
        # attribution tokens: which condition positions each class's own tokens hold, per kept row
        # ((B, C, S) bool), the tokens to read ((C, D)), and where a fit collects its queries
        self.positions = None
        self.tokens = None
        self.attributed = None  # (B, C, H, W) running sum
        self.collect: list | None = None

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

    def upsample(self, maps):
        """(B, N, K) per-query values of a layer -> (B, K, H, W) at the image's size."""
        import torch.nn.functional as F

        b, n, k = maps.shape
        h, w = self.side(n)
        return F.interpolate(maps.permute(0, 2, 1).reshape(b, k, h, w).float(), size=self.size, mode="bilinear", align_corners=False)

    def add_attributed(self, attn, query, logits) -> None:
        """The attribution tokens' maps of this layer call (and its queries, for a fit)."""
        rest = excluded_logsumexp(logits, self.positions)
        if self.collect is not None:
            self.collect.append((attn, query, rest))
        if self.tokens is not None:
            maps = self.upsample(token_shares(attn, query, rest, self.tokens))
            self.attributed = maps if self.attributed is None else self.attributed + maps

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
        keep = self.store.keep_last
        if keep is not None:
            probs = probs[-keep:]
        (self.store.add_cross if self.cross else self.store.add_self)(probs)
        if self.cross and (self.store.tokens is not None or self.store.collect is not None):
            logits = query @ key.transpose(-1, -2) * attn.scale
            if mask is not None:
                logits = logits + mask
            self.store.add_attributed(attn, _kept_heads(query, b, attn.heads, keep), _kept_heads(logits, b, attn.heads, keep))


def _kept_heads(t, b: int, heads: int, keep: int | None):
    """(B * heads, ...) as the processors lay heads out -> (kept rows, heads, ...) in float32."""
    t = t.reshape(b, heads, *t.shape[1:])
    return (t if keep is None else t[-keep:]).float()


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


def excluded_logsumexp(logits, positions):
    """(B, heads, N, S) attention logits over the condition, (B, C, S) bool positions of each
    class's own tokens -> (B, heads, N, C): the log of the softmax's denominator without them,
    what an attribution token put in their place competes with."""
    import torch

    out = []
    for c in range(positions.shape[1]):
        drop = positions[:, c][:, None, None, :]
        out.append(torch.logsumexp(logits.masked_fill(drop, float("-inf")), -1))
    return torch.stack(out, -1)


def token_shares(attn, query, rest, tokens):
    """Each attribution token's share of the attention of every query: (B, heads, N, d) queries,
    (B, heads, N, C) excluded denominators, (C, D) tokens -> (B, N, C) (mean over heads).
    Differentiable in ``tokens``: a fit optimises them through this."""
    import torch

    context = tokens[None].to(attn.to_k.weight.dtype)
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    keys = attn.to_k(context)[0].float().reshape(len(tokens), attn.heads, -1)  # (C, heads, d)
    scores = torch.einsum("bhnd,chd->bhnc", query, keys) * attn.scale
    return torch.sigmoid(scores - rest).mean(1)


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
        tokens=None if options.get("tokens") is None else np.asarray(options["tokens"], np.float32),
    )
    bad = [t for t in (spec.timesteps or ()) + spec.noised_timesteps if not 0 <= t < top]
    if bad:
        raise UsageError(f"attention: timestep {bad[0]} is outside 0..{top - 1} ({gen.config.model} is trained on {top} timesteps)")
    if spec.tokens is not None and spec.tokens.shape[0] != len(gen.context.classes):
        raise UsageError(f"attention.tokens: {spec.tokens.shape[0]} tokens for {len(gen.context.classes)} classes")
    unknown = [b for b in spec.blocks or () if b not in _BLOCKS.values()]
    if unknown:
        raise UsageError(f"attention.blocks: unknown block {unknown[0]!r} (one of down, mid, up)")
    return spec


def _wanted_steps(sched_steps: list[int], timesteps) -> set[int] | None:
    from .features import nearest_steps

    return None if timesteps is None else set(nearest_steps(sched_steps, timesteps).values())


def class_positions(gen, conditions: list[dict]):
    """(B, C, S) bool: the condition positions each class's own tokens hold in each row (a tag
    model: the class's tag slot; Stable Diffusion: its words in the row's prompt)."""
    classes = gen.context.classes
    if gen.vocabulary is None:
        ids = prompt_slots(gen.pipe.tokenizer, [c.get("prompt", "") for c in conditions], classes)
        out = np.zeros((len(conditions), len(classes), gen.pipe.tokenizer.model_max_length), bool)
        for i, row in enumerate(ids):
            for c, where in enumerate(row):
                out[i, c, where] = True
        return out
    out = np.zeros((len(conditions), len(classes), gen.vocabulary.slots), bool)
    for c, slot in enumerate(class_slots(classes, gen.vocabulary.tags)):
        if slot is not None:
            out[:, c, slot] = True
    return out


def _guided_rows(gen, images, latents) -> int | None:
    """Rows a capture keeps of each UNet call: a guided Stable Diffusion call stacks [uncond, cond]."""
    return len(images) if gen.vocabulary is None and latents is not None and gen.guidance() > 1.0 else None


def _walk_path(gen, latents, conditions, decode_rows, timesteps, **hooks) -> None:
    """Replay the samples' own paths from their initial latents, as decode walked them, with the
    family loop's ``capture`` or ``visit`` hook, ending once every step of ``timesteps`` is seen."""
    torch = gen.torch
    sched = gen._fresh_scheduler()
    steps = _wanted_steps(sched.timesteps.tolist(), timesteps)
    z = torch.from_numpy(np.asarray(latents, np.float32)).to(gen.device, gen.dtype)
    gens = None if decode_rows is None else gen._row_generators(decode_rows, "denoise")
    gen.family.sample(sched, z, conditions, gens, steps=steps, **hooks)


def _noised(gen, images, conditions, spec: AttentionSpec):
    """Images without a path (real ones) noised to each of the spec's noised timesteps with one
    shared noise: [(x_t, t)] and the UNet's conditioning for them."""
    from .features import shared_noise

    torch = gen.torch
    x0, kwargs = gen._model_space(images, conditions)
    noise = shared_noise(torch, tuple(x0.shape[1:]), spec.noise_seed).to(x0.device, torch.float32)
    alphas = gen._train_schedule().alphas_cumprod
    out = []
    for t in spec.noised_timesteps:
        a = alphas[t].to(x0.device, torch.float32)
        xt = (a.sqrt() * x0.float() + (1 - a).sqrt() * noise).to(x0.dtype)
        out.append((xt, torch.full((len(xt),), t, device=x0.device, dtype=torch.long)))
    return out, kwargs


def _replay(gen, cap, images, conditions, spec: AttentionSpec, latents, decode_rows) -> None:
    """Run the UNet calls whose attention counts: the samples' own paths, or, for images without
    one, one conditional pass at each noised timestep."""
    if latents is not None:
        _walk_path(gen, latents, conditions, decode_rows, spec.timesteps, capture=cap)
        return
    inputs, kwargs = _noised(gen, images, conditions, spec)
    cap.active = True
    for xt, t in inputs:
        gen.pipe.unet(xt, t, **kwargs)
    cap.active = False


def read_attention(gen, images: np.ndarray, conditions: list[dict], spec: AttentionSpec, latents: np.ndarray | None, decode_rows) -> list:
    """One micro-batch of a tag model or Stable Diffusion: [classes (B, C, H, W), named (B, C),
    null (B, H, W), self (B, N, N) or (B, 0, 0)] as torch tensors (generator._grouped joins them).
    Stable Diffusion's class maps are its prompt's class words' tokens; its null map the
    start-of-text token's, which takes the attention no word does. A class with an attribution
    token in the spec is read from that token instead."""
    torch = gen.torch
    named = gen.named_classes(conditions)
    h, w = images.shape[1:3]
    _, lh, lw = gen.latent_shape()
    text = gen.vocabulary is None
    tokens = None if spec.tokens is None else np.asarray(spec.tokens, np.float32)
    with torch.inference_mode(), AttentionCapture(gen.pipe.unet, spec, (h, w), (lh, lw), keep_last=_guided_rows(gen, images, latents)) as cap:
        if tokens is not None:
            cap.store.positions = torch.from_numpy(class_positions(gen, conditions)).to(gen.device)
            cap.store.tokens = torch.from_numpy(np.nan_to_num(tokens)).to(gen.device)
        _replay(gen, cap, images, conditions, spec, latents, decode_rows)
        store = cap.store
    cross = (store.cross / max(store.layers, 1)).cpu()
    if text:
        positions = prompt_slots(gen.pipe.tokenizer, [c.get("prompt", "") for c in conditions], gen.context.classes)
        classes = torch.from_numpy(per_prompt_class(cross.numpy(), positions, named))
    else:
        classes = torch.from_numpy(per_class(cross.numpy(), class_slots(gen.context.classes, gen.vocabulary.tags), named))
    if tokens is not None:
        own = torch.from_numpy(np.isfinite(tokens).all(1))
        attributed = (store.attributed / max(store.layers, 1)).cpu() * torch.from_numpy(named)[..., None, None]
        classes = torch.where(own[None, :, None, None], attributed, classes)
    selfs = store.self_sum / store.self_sum.sum(-1, keepdim=True) if store.self_sum is not None else torch.zeros(len(images), 0, 0)
    return [classes, torch.from_numpy(named), cross[:, 0], selfs.cpu()]


def fit_tokens(gen, images: np.ndarray, conditions: list[dict], masks: np.ndarray, spec: AttentionSpec, parts: list,
               background: int, steps: int, lr: float) -> tuple[np.ndarray, dict]:
    """OVAM's token optimisation: one attribution token per class whose map (its attention share
    over the rows' captured queries, summed over layers and steps as the labeller sums them,
    stretched 0..1 over the image) matches the class's pixels in ``masks`` (B, H, W) class ids, by
    binary cross-entropy over the classes each row names. Starts from the mean of the class's own
    tokens in the rows' conditions; the UNet runs once per row (its queries kept), the steps only
    re-read them. ``parts``: (row indices, their initial latents or None, their decode rows or
    None) per group the UNet runs at once: a row with a latent is read along its path. Returns
    (C, D) tokens, NaN for classes no row names (and ``background``), and what the fit measured."""
    torch = gen.torch
    c_count = len(gen.context.classes)
    named = gen.named_classes(conditions)
    named[:, background] = False
    positions = class_positions(gen, conditions)
    h, w = images.shape[1:3]
    _, lh, lw = gen.latent_shape()
    # the queries of every row (no_grad, not inference mode: the fit differentiates through them)
    groups = []
    for rows, z, decode_rows in parts:
        with torch.no_grad(), AttentionCapture(gen.pipe.unet, spec, (h, w), (lh, lw), keep_last=_guided_rows(gen, images[rows], z)) as cap:
            cap.store.positions = torch.from_numpy(positions[rows]).to(gen.device)
            cap.store.collect = []
            _replay(gen, cap, images[rows], [conditions[i] for i in rows], spec, z, decode_rows)
            groups.append((cap.store, cap.store.collect, rows))
    held = sum(q.numel() + rest.numel() for _, entries, _ in groups for _, q, rest in entries) * 4 / 2**20
    with torch.no_grad():
        contexts = gen.family.unet_kwargs(conditions)["encoder_hidden_states"].float()
    counts = (positions & named[..., None]).sum((0, 2))
    trained = counts > 0
    init = torch.einsum("bcs,bsd->cd", torch.from_numpy(positions & named[..., None]).float().to(contexts.device), contexts)
    init = init / torch.from_numpy(np.maximum(counts, 1)).float().to(contexts.device)[:, None]
    target = torch.from_numpy(np.stack([masks == k for k in range(c_count)], 1).astype(np.float32))
    tokens, losses = optimise_tokens(groups, init, target, torch.from_numpy(named.astype(np.float32)), steps, lr)
    out = tokens.detach().cpu().numpy().astype(np.float32)
    out[~trained] = np.nan
    return out, {"steps": steps, "lr": lr, "loss": [round(losses[0], 4), round(losses[-1], 4)], "classes": int(trained.sum()), "queries_mib": round(held, 1)}


def optimise_tokens(groups: list, init, target, weight, steps: int, lr: float):
    """Adam on the attribution tokens (C, D), from ``init``: ``groups`` are (store, its collected
    (layer, queries, excluded denominators) entries, the rows they hold); ``target`` (B, C, H, W)
    in 0..1 the masks, ``weight`` (B, C) which (row, class) pairs count. The loss: binary
    cross-entropy between each counted map, stretched 0..1 over its image as the threshold rule
    stretches it, and its mask. Returns the tokens and the loss before each step and after the
    last."""
    import torch

    tokens = torch.nn.Parameter(init.detach().clone().float())
    optimiser = torch.optim.Adam([tokens], lr=lr)

    def loss_of():
        total, pairs = 0.0, 0.0
        for store, entries, rows in groups:
            maps = sum(store.upsample(token_shares(attn, q, rest, tokens)) for attn, q, rest in entries) / max(len(entries), 1)
            flat = maps.flatten(2).cpu()
            lo, hi = flat.min(-1, keepdim=True)[0], flat.max(-1, keepdim=True)[0]
            stretched = ((flat - lo) / (hi - lo).clamp_min(1e-8)).clamp(1e-4, 1 - 1e-4)
            bce = torch.nn.functional.binary_cross_entropy(stretched, target[rows].flatten(2), reduction="none").mean(-1)
            total = total + (bce * weight[rows]).sum()
            pairs += float(weight[rows].sum())
        return total / max(pairs, 1.0)

    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = loss_of()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(loss_of()))
    return tokens.detach(), losses


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
            _walk_path(gen, latents, conditions, decode_rows, spec.timesteps or spec.noised_timesteps, visit=visit)
        else:
            inputs, _ = _noised(gen, images, conditions, spec)
            for xt, t in inputs:
                visit(xt, t)
    return [total, torch.from_numpy(named), torch.zeros(b, h, w), torch.zeros(b, 0, 0)]
