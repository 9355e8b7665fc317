"""`synth fit`: train a diffusers UNet2DModel on the images of any source stage (or, with
``[fit] tags``, a UNet2DConditionModel conditioned on each image's tags: tags.py).

The first step of the DatasetGAN recipe for a user's own domain (fit G on unlabelled images,
then label a few), and how the shipped shapes model is made. Every step's randomness derives
from (manifest seed, step, op), so a run resumed from a checkpoint continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import ManifestError, RunError, UsageError
from synth.manifest import Manifest, load_manifest
from synth.seeding import sample_rng, sample_seed

from .fit_config import TAG_FIELDS, FitConfig
from .fit_recipe import ema_decay, loss_trend, loss_weights, snr, timestep_probs, trend_line
from .fit_watch import Watch, verdict
from .tags import load_encoder, read_vocabulary
from .loading import pick_device_dtype
from .plots import image_grid, loss_curve


@dataclass
class TrainingData:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray | None  # (N,) int64 class ids
    skipped: dict[str, int]
    tags: list[list[str] | None] | None = None  # each image's tags (its record's "tags"; None: untagged), when any record has them


def read_fit_config(m: Manifest) -> FitConfig:
    """The manifest's [fit] table, validated with the rest of the manifest (register_tables)."""
    cfg = m.tables.get("fit")
    if cfg is None:
        raise ManifestError(m.path, ["fit: a [fit] table is required for `synth fit`"])
    return cfg


def _read_processes(m: Manifest, cfg: FitConfig) -> int:
    if cfg.read_processes != "auto":
        return cfg.read_processes
    # Processes cost a second or two each to start; worth it only for many images.
    return 1 if m.dataset.num_samples < 10_000 else max(1, min(8, os.cpu_count() or 1))


def _rows(batch) -> tuple[np.ndarray, list, list[str], list]:
    """What training keeps of a batch: images, class labels, why samples were dropped, and tags."""
    return batch.images, [r.get("class") for r in batch.records], [f"{d.stage}: {d.reason}" for d in batch.dropped], [r.get("tags") for r in batch.records]


# One pipeline per reading process, set up once by _reader_setup (a ProcessPoolExecutor initializer).
_READER = None


def _reader_setup(path: str, text: str, shared: dict) -> None:
    global _READER
    from synth.pipeline import Pipeline

    _READER = Pipeline(load_manifest(path, text=text), quiet=True, threads=1)
    _READER.setup(shared)  # adopts what the parent's set-up computed, as Ray's actors do


def _reader_batch(indices: list[int]):
    # A stage's failure arrives as a one-line SynthError (Pipeline._guard), re-raised in the parent.
    return _rows(_READER.run_batch(indices))


def load_training_data(m: Manifest, progress, processes: int = 1, threads: int | None = None) -> TrainingData:
    """Run the manifest's source (and any transforms) over all its samples, keep images + labels.

    With processes > 1 the batches are read in that many processes; every sample derives from
    (seed, index) alone, so the images are the same, in the same order, for any count. threads:
    the torch threads the fit runs with (else the pipeline's set-up applies [run] threads)."""
    from synth.pipeline import Pipeline

    n, b = m.dataset.num_samples, m.run.batch_size
    chunks = [list(range(start, min(start + b, n))) for start in range(0, n, b)]
    # Set up here in every case: a set-up error is then the same one line, not a broken pool,
    # and reading processes adopt the result (Pipeline.shared_state) instead of recomputing it.
    pipe = Pipeline(m, threads=threads)
    pipe.setup()
    if processes > 1 and len(chunks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked copy of a process that holds threads (tqdm, torch) can hang
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(processes, len(chunks)), mp_context=ctx, initializer=_reader_setup, initargs=(str(m.path), m.text, pipe.shared_state())) as pool:
            return _collect(pool.map(_reader_batch, chunks), chunks, n, progress)
    return _collect((_rows(pipe.run_batch(c)) for c in chunks), chunks, n, progress)


def _collect(results, chunks, n: int, progress) -> TrainingData:
    images, labels, skipped, tags = [], [], {}, []
    for indices, (imgs, labs, dropped, tag_lists) in zip(chunks, results):
        images.append(imgs)
        labels += labs
        tags += tag_lists
        for reason in dropped:
            skipped[reason] = skipped.get(reason, 0) + 1
        progress(indices[-1] + 1, n)
    kept = [im for im in images if len(im)]
    if not kept:
        raise RunError("fit: the source produced no usable images")
    imgs = np.concatenate(kept)
    have = [lab is not None for lab in labels]
    if any(have) and not all(have):
        raise RunError("fit: some samples have a class label and others do not")
    tag_lists = [list(map(str, t)) if isinstance(t, list) else None for t in tags]
    return TrainingData(imgs, np.asarray(labels, np.int64) if all(have) else None, skipped, tag_lists if any(t is not None for t in tag_lists) else None)


def _recipe_hash(m: Manifest, cfg: FitConfig, init: dict | None = None) -> str:
    # What decides the weights: the data (manifest identity), the recipe and the starting weights,
    # not where the output or the starting weights live, nor how long a session runs.
    exclude = {"output", "init_from", "max_minutes", "device", "checkpoint_every", "keep_checkpoints", "grid_samples", "grid_steps", "license", "threads", "read_processes", "save_dtype", "watch"}
    if not cfg.tags:
        exclude |= set(TAG_FIELDS)
    if cfg.tagged_share is None:  # added later: unset, the draw (and so the weights) is as before
        exclude.add("tagged_share")
    recipe = cfg.model_dump(mode="json", exclude=exclude)
    blob = json.dumps({"data": m.hash, "recipe": recipe, "init": init and init["sha256"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def build_unet(cfg: FitConfig, size: int, num_classes: int | None):
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    down = tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(range(levels)))
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=cfg.norm_num_groups,
        num_class_embeds=num_classes,
    )


def build_tag_unet(cfg: FitConfig, size: int, vocabulary):
    """A UNet2DConditionModel cross-attending, at the attention levels, to the tag tokens (tags.py),
    with the token table, as one module: ``.unet`` and ``.tags`` (trained and averaged together)."""
    import torch
    from diffusers import UNet2DConditionModel

    from .tags import make_encoder

    levels = len(cfg.block_out_channels)
    down = tuple("CrossAttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("CrossAttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(range(levels)))
    unet = UNet2DConditionModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        # the bottleneck cross-attends only when the lowest level does
        mid_block_type="UNetMidBlock2DCrossAttn" if levels - 1 in cfg.attention_levels else None,
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_heads,  # diffusers' legacy name for the number of heads
        norm_num_groups=cfg.norm_num_groups,
    )
    module = torch.nn.Module()
    module.unet = unet
    module.tags = make_encoder(vocabulary.slots, cfg.cross_attention_dim)
    return module


def predict(model, x, t, labels=None, presence=None):
    """The UNet's output for x at t: class labels for a UNet2DModel, tag presence (B, tags) bool
    for a tag-conditioned one (build_tag_unet)."""
    if presence is not None:
        states, mask = model.tags(presence)
        return model.unet(x, t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
    return model(x, t, class_labels=labels).sample


def _lr_at(cfg: FitConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class Trainer:
    def __init__(self, m: Manifest, cfg: FitConfig, out: Path, data: TrainingData):
        import torch
        from diffusers import DDPMScheduler

        self.torch, self.m, self.cfg, self.out, self.data = torch, m, cfg, out, data
        self.seed = m.dataset.seed
        self.device, _ = pick_device_dtype(cfg.device, "float32")
        n, h, w, _ = data.images.shape
        if h != w:
            raise UsageError(f"fit: images are {w}x{h}; set the source's size = N for square images")
        self.size = h
        self.num_classes = None
        self.vocabulary = None
        if cfg.tags:
            from .tags import TagVocabulary

            if data.tags is None:
                raise UsageError("fit.tags: the source gives no tags (each sample's record needs a 'tags' list, e.g. the shapes source's, or a folder's tags_file)")
            self.vocabulary = TagVocabulary.from_training(data.tags, m.dataset.classes)
            if not self.vocabulary.tags:
                raise UsageError("fit.tags: no image has a tag")
        elif cfg.class_conditional is True or (cfg.class_conditional == "auto" and data.labels is not None):
            if data.labels is None:
                raise UsageError("fit.class_conditional: the source gives no class labels")
            self.num_classes = max(len(m.dataset.classes), int(data.labels.max()) + 1)
        torch.manual_seed(sample_seed(self.seed, 0, "fit-init"))
        if self.vocabulary is not None:
            self.unet = build_tag_unet(cfg, self.size, self.vocabulary).to(self.device)
        else:
            self.unet = build_unet(cfg, self.size, self.num_classes).to(self.device)
        self.init_from = self._load_init(m, cfg) if cfg.init_from else None
        self.ema = copy.deepcopy(self.unet).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type, clip_sample=False)
        self.images = torch.from_numpy(data.images).to(self.device)
        self.labels = None if self.num_classes is None else torch.from_numpy(data.labels).to(self.device)
        self.presence = None
        if self.vocabulary is not None:
            presence = self.vocabulary.presence(data.tags)
            self.presence = torch.from_numpy(presence).to(self.device)
            self.tagged = np.flatnonzero(presence.any(1))  # the rows tagged_share draws from
        self.amp_dtype = None
        mp = cfg.mixed_precision
        if mp == "bf16" or (mp == "auto" and self.device.type == "cuda"):
            self.amp_dtype = torch.bfloat16
        elif mp == "fp16":
            if self.device.type != "cuda":
                raise UsageError("fit.mixed_precision: fp16 needs a GPU (use bf16 on CPUs)")
            self.amp_dtype = torch.float16
        if cfg.channels_last:
            self.unet = self.unet.to(memory_format=torch.channels_last)
        alphas = self.sched.alphas_cumprod.numpy()
        self.loss_weight = torch.from_numpy(loss_weights(snr(alphas), cfg.loss_weighting, cfg.snr_gamma, cfg.prediction_type)).float().to(self.device)
        self.t_probs = torch.from_numpy(timestep_probs(alphas, cfg.timestep_sampling, cfg.logsnr_mean, cfg.logsnr_std))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0
        self.recipe = _recipe_hash(m, cfg, self.init_from)
        self.watch = None  # fit_watch.Watch, when [fit].watch is set

    def _load_init(self, m: Manifest, cfg: FitConfig) -> dict:
        """Continue from a trained pipeline: its UNet weights, checked against our architecture."""
        from safetensors.torch import load_file

        from synth.plugins import load_registry

        ref = cfg.init_from
        folder = Path(load_registry().resolve_model(ref)) if ref.startswith("builtin:") else Path(ref)
        if not folder.is_absolute():
            folder = m.folder / folder
        weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():
            raise UsageError(f"fit.init_from: no UNet weights at {weights}")
        state = load_file(weights, device=str(self.device))
        target = self.unet if self.vocabulary is None else self.unet.unet
        ours = target.state_dict()
        shared = {k: v for k, v in state.items() if k in ours and ours[k].shape == v.shape}
        differ = sorted(set(ours) ^ set(state)) + [k for k in state if k in ours and ours[k].shape != state[k].shape]
        if cfg.init_shared:
            if not shared:
                raise UsageError(f"fit.init_from: {folder} shares no weight (same name and shape) with this architecture")
            target.load_state_dict(shared, strict=False)
            taken = sum(v.numel() for v in shared.values()) / sum(v.numel() for v in ours.values())
        elif differ:
            raise UsageError(f"fit.init_from: {folder} has a different architecture (first difference: {differ[0]}); match the [fit] architecture fields to it, or set init_shared")
        else:
            target.load_state_dict(state)
            taken = 1.0
        theirs = read_vocabulary(folder)
        if self.vocabulary is not None and theirs is not None:
            if theirs.tags != self.vocabulary.tags:
                raise UsageError(f"fit.init_from: {folder} is conditioned on the tags {', '.join(theirs.tags)}, not {', '.join(self.vocabulary.tags)}")
            self.unet.tags.load_state_dict(load_encoder(folder, theirs).state_dict())
        prior = json.loads((folder / "fit.json").read_text()) if (folder / "fit.json").is_file() else {}
        return {
            "path": str(folder),
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "steps": prior.get("steps_done"),
            "training_seconds": prior.get("training_seconds"),
            "share_of_weights": round(taken, 4),
        }

    # -- one step ---------------------------------------------------------------------------
    def _batch_rows(self, rng) -> np.ndarray:
        """The step's training images: uniform over all, or with tagged_share, that share drawn
        from the tagged ones (few labelled images among many unlabelled would otherwise reach
        their tokens a few times in a whole fit)."""
        cfg = self.cfg
        if cfg.tagged_share is None:
            return rng.integers(0, len(self.images), cfg.batch_size)
        m = int(round(cfg.tagged_share * cfg.batch_size))
        return np.concatenate([self.tagged[rng.integers(0, len(self.tagged), m)], rng.integers(0, len(self.images), cfg.batch_size - m)])

    def train_step(self) -> float:
        torch, cfg = self.torch, self.cfg
        rng = sample_rng(self.seed, self.step, "fit-batch")
        idx = torch.from_numpy(self._batch_rows(rng)).to(self.device)
        x0 = self.images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if cfg.hflip:
            flip = torch.from_numpy(rng.random(cfg.batch_size) < 0.5).to(self.device)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.step, "fit-noise"))
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        if cfg.timestep_sampling == "uniform":  # the original recipe's draw, kept bit for bit
            t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=g).to(self.device)
        else:
            t = torch.multinomial(self.t_probs, cfg.batch_size, replacement=True, generator=g).to(self.device)
        xt = self.sched.add_noise(x0, noise, t)
        target = noise if cfg.prediction_type == "epsilon" else self.sched.get_velocity(x0, noise, t)
        labels = None if self.labels is None else self.labels[idx]
        presence = None
        if self.presence is not None:  # classifier-free guidance: some images lose all their tags
            keep = sample_rng(self.seed, self.step, "fit-tag-drop").random(cfg.batch_size) >= cfg.tag_dropout
            presence = self.presence[idx] & torch.from_numpy(keep).to(self.device)[:, None]
        for group in self.opt.param_groups:
            group["lr"] = _lr_at(cfg, self.step)
        if cfg.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            pred = predict(self.unet, xt, t, labels, presence)
        if cfg.loss_weighting == "uniform":  # the original recipe's loss, kept bit for bit
            loss = torch.nn.functional.mse_loss(pred.float(), target)
        else:
            per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
            loss = (per_sample * self.loss_weight[t]).mean()
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        if self.ema is not None:
            decay = ema_decay(self.step, cfg.ema_decay, cfg.ema_warmup)
            with torch.no_grad():
                ema_p = list(self.ema.parameters())
                torch._foreach_lerp_(ema_p, [p.detach() for p in self.unet.parameters()], 1.0 - decay)
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_file

        final = self.ckpt_dir / f"step-{self.step:07d}"
        tmp = self.ckpt_dir / f".step-{self.step:07d}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.unet.state_dict().items()}, tmp / "unet.safetensors")
        if self.ema is not None:
            save_file({k: v.contiguous() for k, v in self.ema.state_dict().items()}, tmp / "ema.safetensors")
        self.torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
        if self.scaler is not None:  # fp16 on a GPU: the loss scale is state too
            self.torch.save(self.scaler.state_dict(), tmp / "scaler.pt")
        # threads too: torch's CPU results depend on the thread count, so a resume reuses it
        state = {"step": self.step, "losses": self.losses, "seconds": self.seconds, "recipe": self.recipe, "num_classes": self.num_classes, "threads": self.torch.get_num_threads()}
        if self.watch is not None:
            state["watch"] = self.watch.history
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(self.ckpt_dir.glob("step-*"))[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        self.save_progress_pictures()
        return final

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.ckpt_dir.glob("step-*") if (p / "state.json").exists())
        return done[-1] if done else None

    def resume(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((ckpt / "state.json").read_text())
        if state["recipe"] != self.recipe:
            raise UsageError(f"fit: checkpoints in {self.ckpt_dir} come from a different recipe or data; pass --overwrite to start over")
        self.unet.load_state_dict(load_file(ckpt / "unet.safetensors", device=str(self.device)))
        if self.ema is not None:
            self.ema.load_state_dict(load_file(ckpt / "ema.safetensors", device=str(self.device)))
        self.opt.load_state_dict(self.torch.load(ckpt / "optimizer.pt", map_location=self.device, weights_only=True))
        if self.scaler is not None and (ckpt / "scaler.pt").exists():
            self.scaler.load_state_dict(self.torch.load(ckpt / "scaler.pt", weights_only=True))
        self.step, self.losses, self.seconds = state["step"], list(state["losses"]), float(state["seconds"])
        if self.watch is not None:
            self.watch.history = list(state.get("watch", []))

    # -- pictures and the final pipeline -----------------------------------------------------
    def sample(self, n: int, steps: int, op: str = "fit-grid", batch: int = 256) -> np.ndarray:
        """n images from the EMA weights by DDIM; image i's noise from (seed, i, op)."""
        from diffusers import DDIMScheduler

        torch = self.torch
        model = self.ema if self.ema is not None else self.unet
        sched = DDIMScheduler.from_config(self.sched.config)
        sched.set_timesteps(steps)
        was_training = model.training
        model.eval()
        out = []
        for start in range(0, n, batch):
            rows = range(start, min(start + batch, n))
            gens = [torch.Generator().manual_seed(sample_seed(self.seed, i, op)) for i in rows]
            x = torch.stack([torch.randn((3, self.size, self.size), generator=g) for g in gens]).to(self.device)
            labels = None if self.num_classes is None else torch.tensor(list(rows), device=self.device) % self.num_classes
            presence = None
            if self.vocabulary is not None:  # each image's tags drawn as generation draws them
                drawn = [self.vocabulary.draw(self.seed, i, f"{op}-tags") for i in rows]
                presence = torch.from_numpy(self.vocabulary.presence(drawn)).to(self.device)
            with torch.inference_mode():
                for t in sched.timesteps:
                    x = sched.step(predict(model, x, t, labels, presence), t, x).prev_sample
            out.append(((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy() * 255 + 0.5).astype(np.uint8))
        model.train(was_training)
        return np.concatenate(out)

    def save_progress_pictures(self) -> None:
        prog = self.out / "progress"
        prog.mkdir(parents=True, exist_ok=True)
        image_grid(self.sample(self.cfg.grid_samples, self.cfg.grid_steps)).save(prog / f"samples-step-{self.step:07d}.png")
        loss_curve(self.losses).save(prog / "loss.png")

    def final_loss(self) -> float:
        tail = self.losses[-200:]
        return float(np.mean(tail)) if tail else float("nan")

    def save_pipeline(self, finished: bool) -> None:
        from diffusers import DDPMPipeline

        model = self.ema if self.ema is not None else self.unet
        model = copy.deepcopy(model).to("cpu")
        # float()/half()/bfloat16(), not to(dtype): diffusers' to(dtype) warns about fp32-only
        # modules even when a model has none
        model = {"fp32": model.float, "fp16": model.half, "bf16": model.bfloat16}[self.cfg.save_dtype]()
        pipe = DDPMPipeline(unet=model if self.vocabulary is None else model.unet, scheduler=self.sched)
        tmp = self.out / f".pipeline.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp, safe_serialization=True)
        if self.vocabulary is not None:
            from .tags import save as save_tags

            save_tags(tmp, self.vocabulary, model.tags)
        for name in ("unet", "scheduler", "model_index.json") + (("tags",) if self.vocabulary is not None else ()):
            target = self.out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(tmp / name, target)
        shutil.rmtree(tmp, ignore_errors=True)
        image_grid(self.sample(self.cfg.grid_samples, self.cfg.grid_steps)).save(self.out / "samples.png")
        loss_curve(self.losses).save(self.out / "loss.png")
        info = self.summary(finished)
        (self.out / "fit.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        (self.out / "README.md").write_text(model_card(self.m, self.cfg, info))

    def summary(self, finished: bool) -> dict:
        torch = self.torch
        params = sum(p.numel() for p in self.unet.parameters())
        return {
            "finished": finished,
            "steps_done": self.step,
            "steps_planned": self.cfg.steps,
            "final_loss_mean_last_200": round(self.final_loss(), 6),
            "loss_trend": loss_trend(self.losses, window=min(1000, max(50, len(self.losses) // 5))),
            "training_seconds": round(self.seconds, 1),
            "parameters": params,
            "image_size": self.size,
            "num_training_images": int(len(self.images)),
            "skipped_images": self.data.skipped,
            "num_classes": self.num_classes,
            "tags": None if self.vocabulary is None else list(self.vocabulary.tags),
            # few-shot conditioning: images without tags train with the null token only
            "tagged_images": None if self.vocabulary is None else sum(t is not None for t in self.data.tags),
            "recipe_sha256": self.recipe,
            "init_from": self.init_from,
            "watch": self.watch.summary() if self.watch is not None else None,
            "saved_dtype": self.cfg.save_dtype,
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "device": str(self.device),
                # which GPU, and the autocast dtype: a fit's time means little without them
                "accelerator": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
                "autocast": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype is not None else None,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
        }


def _machine_text(machine: dict) -> str:
    """'cuda (NVIDIA H200, 16 CPU cores, torch 2.11, 16 threads; bfloat16 autocast)'; fits recorded
    before the accelerator and autocast were kept say only what they kept."""
    parts = [machine["accelerator"]] if machine.get("accelerator") else []
    parts += [f"{machine['cpu_count']} CPU cores", f"torch {machine['torch']}", f"{machine['threads']} threads"]
    autocast = f"; {machine['autocast']} autocast" if machine.get("autocast") else ""
    return f"{machine['device']} ({', '.join(parts)}{autocast})"


def _init_line(info: dict) -> str:
    init = info.get("init_from")
    if not init:
        return ""
    before = f"{init['steps']} steps, {init['training_seconds']:.0f} s" if init.get("steps") else "its own recipe"
    share = init.get("share_of_weights", 1.0)
    if share < 1.0:
        return f"- Started from the weights of `{Path(init['path']).name}` ({before}) that fit this architecture ({share:.0%} of the parameters; the rest fresh)\n"
    return f"- Continued from `{Path(init['path']).name}` ({before}; the numbers here count this run only)\n"


def _watch_line(info: dict) -> str:
    line = verdict(info.get("watch"))
    return f"- Watched: {line}\n" if line else ""


def _condition_text(info: dict) -> str:
    if info.get("tags"):
        tagged = info.get("tagged_images")
        few = f"; {tagged} of {info['num_training_images']} images tagged, the rest trained with the null token" if tagged not in (None, info["num_training_images"]) else ""
        return f"conditioned on tags {', '.join(info['tags'])} (one token each, cross-attended; tags/ holds the tokens{few})"
    return f"classes: {info['num_classes'] or 'unconditional'}"


def _load_text(info: dict) -> str:
    if info.get("tags"):
        return ("Load it: in a manifest `[generator] name = \"diffusers\"`, `model = \"<folder>\"` (the UNet cross-attends to "
                "the tokens in tags/, which diffusers' own pipelines do not read)")
    return 'Load it: `DDPMPipeline.from_pretrained(folder)`, or in a manifest `[generator] name = "diffusers"`, `model = "<folder>"`'


def model_card(m: Manifest, cfg: FitConfig, info: dict) -> str:
    hours = info["training_seconds"] / 3600
    status = "finished" if info["finished"] else f"stopped early at step {info['steps_done']} of {info['steps_planned']}"
    return f"""---
license: {cfg.license}
library_name: diffusers
pipeline_tag: {'image-generation' if info.get('tags') else 'unconditional-image-generation'}
tags:
- synth
- diffusers
- ddpm
---

# {Path(cfg.output).name}

A diffusers `{'UNet2DConditionModel' if info.get('tags') else 'UNet2DModel'}` ({info['parameters'] / 1e6:.2f} M parameters, {info['image_size']}x{info['image_size']})
trained by `synth fit` from the manifest `{m.path.name}` (the recipe, in full, is below).

- Training: {info['steps_done']} steps ({status}), batch {cfg.batch_size}, AdamW lr {cfg.lr} ({cfg.lr_schedule}, {cfg.warmup_steps} warm-up steps), EMA {cfg.ema_decay}
- Noise schedule: {cfg.beta_schedule}, {cfg.num_train_timesteps} timesteps, prediction type {cfg.prediction_type}
- Final loss (mean of the last 200 steps): {info['final_loss_mean_last_200']:.4f}; {trend_line(info.get('loss_trend'))}
{_init_line(info)}{_watch_line(info)}- Training time: {info['training_seconds']:.0f} s ({hours:.2f} h) on {_machine_text(info['machine'])}
- Training images: {info['num_training_images']}; {_condition_text(info)}; weights saved in {info['saved_dtype']}
- {_load_text(info)}

![samples](samples.png)

![loss](loss.png)

## Recipe

```toml
{m.text.strip()}
```
"""


def run_fit(manifest_path: Path, overwrite: bool, show_progress: bool, threads: int | str | None = None) -> dict:
    from synth.bars import progress_bar
    from synth.threads import apply_threads

    m = load_manifest(manifest_path)
    cfg = read_fit_config(m)
    asked_threads = threads or cfg.threads
    fit_threads = apply_threads(asked_threads)
    # before the output folder and the images: a bad extractor is one line and leaves nothing
    watch = Watch(m, cfg.watch, cfg.checkpoint_every) if cfg.watch is not None else None
    out = m.folder / cfg.output if not Path(cfg.output).is_absolute() else Path(cfg.output)
    out = out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"fit.output: cannot create {out}: {e.strerror or e}") from None
    if overwrite:
        for name in ("checkpoints", "progress", "unet", "scheduler", "tags"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("model_index.json", "fit.json", "README.md", "samples.png", "loss.png"):
            (out / name).unlink(missing_ok=True)

    bar = progress_bar(m.dataset.num_samples, "fit: reading images", "image", disable=not show_progress)
    data = load_training_data(m, lambda done, total: bar.update(done - bar.n), _read_processes(m, cfg), fit_threads)
    bar.close()
    trainer = Trainer(m, cfg, out, data)
    if watch is not None:
        watch.set_reference(data.images)
        trainer.watch = watch
    ckpt = trainer.latest_checkpoint()
    resumed_from = None
    if ckpt is not None:
        saved_threads = json.loads((ckpt / "state.json").read_text()).get("threads")
        if not isinstance(asked_threads, int) and saved_threads:  # bit-exact continuation needs the same count
            apply_threads(saved_threads)
        trainer.resume(ckpt)
        resumed_from = trainer.step
    if trainer.step >= cfg.steps and (out / "model_index.json").exists():
        return {**trainer.summary(True), "nothing_to_do": True, "output": str(out)}

    bar = progress_bar(cfg.steps, "synth fit", "step", initial=trainer.step, disable=not show_progress)
    budget = cfg.max_minutes * 60 if cfg.max_minutes else None
    session_start = time.perf_counter()
    finished = True
    said_plateau = False

    def watch_now() -> None:
        point = watch.measure(trainer.step, lambda n, steps: trainer.sample(n, steps, op="fit-watch"))
        if show_progress:
            print(f"synth fit: {watch.line(point)}", file=sys.stderr, flush=True)

    try:
        while trainer.step < cfg.steps:
            t0 = time.perf_counter()
            trainer.train_step()
            trainer.seconds += time.perf_counter() - t0
            bar.update(1)
            if trainer.step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(trainer.losses[-50:]):.4f}", refresh=False)
            if watch is not None and watch.due(trainer.step):
                watch_now()
            if trainer.step % cfg.checkpoint_every == 0 and trainer.step < cfg.steps:
                trainer.save_checkpoint()
                trend = loss_trend(trainer.losses, window=min(1000, max(50, len(trainer.losses) // 5)))
                if trend and trend["plateau"] and not said_plateau and show_progress:
                    said_plateau = True
                    print(f"synth fit: step {trainer.step}: {trend_line(trend)}", file=sys.stderr, flush=True)
            if budget is not None and time.perf_counter() - session_start > budget:
                finished = False
                break
    except KeyboardInterrupt:
        bar.close()
        trainer.save_checkpoint()
        raise RunError(f"fit interrupted at step {trainer.step}; checkpoint saved, rerun to resume") from None
    bar.close()
    if watch is not None and not watch.measured(trainer.step):
        watch_now()  # the saved weights are always measured
    trainer.save_checkpoint()
    trainer.save_pipeline(finished)
    return {**trainer.summary(finished), "output": str(out), "resumed_from": resumed_from}
