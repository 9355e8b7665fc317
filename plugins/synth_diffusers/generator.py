"""DiffusersGenerator: latents from per-sample seeds, decoded by a diffusers pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synth.devices import accelerator_resources
from synth.errors import UsageError
from synth.protocols import Generator
from synth.seeding import sample_seed

from .config import SCHEDULERS, DiffusersConfig, FeatureOptions, InvertOptions
from .loading import load_pipeline, local_problems, model_license, pick_device_dtype, resolve_model_ref, train_timesteps, unet_blocks
from . import levers
from .families import Family, family_of
from .tags import read_vocabulary

# the op a sample's sampler noise derives from: decode draws it, a trajectory replay draws it again
DENOISE = "denoise"


class DiffusersGenerator(Generator):
    """Any diffusers pipeline: UNet2DModel (unconditional or class-conditional), a tag-conditioned
    UNet2DConditionModel (`synth fit` with tags) or Stable Diffusion."""

    name = "diffusers"
    Config = DiffusersConfig
    capabilities = frozenset({"sample", "decode", "invert", "condition:prompt", "condition:class", "condition:tags", "features", "compose", "attention", "attention_tokens", "contrast", "hspace", "edit"})
    InvertOptions = InvertOptions
    FeatureOptions = FeatureOptions

    def __init__(self, config, context):
        super().__init__(config, context)
        self.pipe = None
        self.family: Family | None = None  # what differs by model family (families.py), once loaded
        self.model_ref: str | None = None  # the local folder the model loads from, once set up
        self.kind = None  # the family's: "unet2d" | "text2image"
        self.feedback = None  # feedback.Feedback when [generator.feedback] guides sampling
        self.num_class_embeds = None
        self.vocabulary = None  # tags.TagVocabulary of a tag-conditioned model
        self.refiner = None  # SDXL's refiner pipeline, when [generator] refiner names one
        self._prompts = self._read_prompts()

    @classmethod
    def resources(cls, config: DiffusersConfig):
        return accelerator_resources(config.device)

    @classmethod
    def _local_folder(cls, config: DiffusersConfig, plan) -> tuple[Path | None, list[str]]:
        ref = config.model
        if ref.startswith("builtin:"):
            try:
                ref = plan.registry.resolve_model(ref)
            except UsageError as e:
                return None, [f"model: {e}"]
        where, local = resolve_model_ref(ref, plan.resolve_path)
        if not local:
            return None, []  # a hub id: only loading can tell
        folder = Path(where)
        return folder, local_problems(folder)

    @classmethod
    def check_plan(cls, config: DiffusersConfig, plan) -> list[str]:
        from .levers import check as check_levers

        folder, found = cls._local_folder(config, plan)
        problems = config.check_classes(plan.classes) + found + check_levers(config, None if found else folder, plan.resolve_path)
        if folder is not None and not found and (config.prompt_2 or config.negative_prompt_2):
            import json

            try:
                index = json.loads((folder / "model_index.json").read_text())
            except (OSError, ValueError):
                index = {}
            if "text_encoder" in index and not (index.get("text_encoder_2") or [None])[0]:
                field = "prompt_2" if config.prompt_2 else "negative_prompt_2"
                problems.append(f"{field}: {config.model} has one text encoder; {field} is for Stable Diffusion XL's second")
        if config.refiner is not None and not config.refiner.startswith("builtin:"):
            where, local = resolve_model_ref(config.refiner, plan.resolve_path)
            if local:
                problems += [p.replace("model:", "refiner:", 1) for p in local_problems(Path(where))]
        if config.prompts_file is not None and not plan.resolve_path(config.prompts_file).is_file():
            problems.append(f"prompts_file: no such file {plan.resolve_path(config.prompts_file)}")
        return problems

    @classmethod
    def static_info(cls, config: DiffusersConfig, plan) -> dict[str, Any] | None:
        """Kind, capabilities and shapes from a local pipeline's config files (no weights)."""
        import json

        folder, problems = cls._local_folder(config, plan)
        if folder is None or problems:
            return None
        try:
            index = json.loads((folder / "model_index.json").read_text())
            unet = json.loads((folder / "unet" / "config.json").read_text())
        except (OSError, ValueError):
            return None
        size = unet.get("sample_size") or 32
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        caps = {"sample", "decode", "invert", "features", "edit"}
        if "text_encoder" in index:
            caps |= {"condition:prompt", "compose", "attention", "attention_tokens", "hspace"}
            try:
                vae = json.loads((folder / "vae" / "config.json").read_text())
                scale = 2 ** (len(vae["block_out_channels"]) - 1)
            except (OSError, ValueError, KeyError):
                return {"capabilities": frozenset(caps)}
            ih, iw = config.height or h * scale, config.width or w * scale
            return {"capabilities": frozenset(caps), "latent_shape": (unet["in_channels"], ih // scale, iw // scale), "image_shape": (ih, iw, 3)}
        caps |= {"compose", "hspace"}
        if unet.get("num_class_embeds"):
            caps |= {"condition:class", "contrast"}
        vocabulary = read_vocabulary(folder) if unet.get("_class_name") == "UNet2DConditionModel" else None
        if vocabulary is not None:
            caps |= {"condition:tags", "attention", "attention_tokens", "contrast"}
        return {"capabilities": frozenset(caps), "latent_shape": (unet["in_channels"], h, w), "image_shape": (h, w, 3)}

    @classmethod
    def check_feature_options(cls, config: DiffusersConfig, options: dict[str, Any] | FeatureOptions, plan) -> list[str]:
        try:
            opts = typed_options(FeatureOptions, options, "features")
        except UsageError as e:
            return [str(e).removeprefix("features.")]
        folder, problems = cls._local_folder(config, plan)
        if folder is None or problems:
            return []  # reported by check_plan; a hub model is checked when it loads
        problems = []
        blocks = unet_blocks(folder)
        for b in opts.blocks or []:
            if blocks is not None and b not in blocks:
                problems.append(f"blocks: unknown block {b!r} ({config.model} has {', '.join(blocks)})")
        top = train_timesteps(folder)
        for t in opts.timesteps or []:
            if top is not None and not 0 <= t < top:
                problems.append(f"timesteps: {t} is outside 0..{top - 1} ({config.model} is trained on {top} timesteps)")
        return problems

    def _read_prompts(self) -> list[str] | None:
        cfg = self.config
        if cfg.prompts is not None:
            return list(cfg.prompts)
        if cfg.prompts_file is not None:
            path = self.context.resolve_path(cfg.prompts_file)
            try:
                lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            except OSError as e:
                raise UsageError(f"generator.prompts_file: cannot read {path}: {e.strerror or e}") from None
            prompts = [ln for ln in lines if ln and not ln.startswith("#")]
            if not prompts:
                raise UsageError(f"generator.prompts_file: {path} holds no prompts")
            return prompts
        return None

    # -- set-up -----------------------------------------------------------------------------
    def setup(self, pipeline: Any = None) -> None:
        """Load the manifest's model; or adopt ``pipeline``, a diffusers pipeline already in
        memory (one a notebook built, or random weights for a benchmark), cast to the dtype."""
        import torch

        self.torch = torch
        self.device, self.dtype = pick_device_dtype(self.config.device, self.config.dtype)
        model_ref = self._resolve_model_ref(self.context.registry.resolve_model(self.config.model)) if pipeline is None else self.config.model
        self.model_ref = model_ref
        self.pipe = load_pipeline(model_ref, self.config, self.dtype) if pipeline is None else pipeline.to(dtype=self.dtype)
        self.pipe.set_progress_bar_config(disable=True)
        levers.place(self)
        self._set_scheduler()
        self.family = family_of(self)
        self.kind = self.family.kind
        self.family.setup(model_ref)
        self.capabilities = type(self).capabilities - self.family.lacks()
        levers.load_adapters(self)
        self.feedback = None
        if self.config.feedback is not None and self.config.feedback.weight > 0:
            from .feedback import Feedback

            self.feedback = Feedback(self, self.config.feedback)

    def _resolve_model_ref(self, ref: str) -> str:
        return resolve_model_ref(ref, self.context.resolve_path)[0]

    def _set_scheduler(self) -> None:
        import inspect

        import diffusers

        cls_name = SCHEDULERS[self.config.scheduler]
        cls = type(self.pipe.scheduler) if cls_name is None else getattr(diffusers, cls_name)
        options = self.config.scheduler_options()
        takes = set(inspect.signature(cls.__init__).parameters)
        for key in options:
            if key not in takes:
                field = {"use_karras_sigmas": "karras_sigmas", "rescale_betas_zero_snr": "zero_snr"}.get(key, key)
                raise UsageError(f"generator.{field}: scheduler {self.config.scheduler!r} ({cls.__name__}) has no such option; use one that does (euler, dpm++)")
        if cls_name is not None or options:
            self.pipe.scheduler = cls.from_config(self.pipe.scheduler.config, **options)

    def describe(self) -> dict[str, Any]:
        import diffusers

        out = {
            "name": self.name,
            "model": self.config.model,
            "revision": self.config.revision,
            "scheduler": self.config.scheduler,
            "steps": self.config.steps,
            "diffusers": diffusers.__version__,
            "license": model_license(self.model_ref or self.config.model),
        }
        if self.pipe is not None:
            out["pipeline"] = type(self.pipe).__name__
            out["dtype"] = str(self.dtype).replace("torch.", "")
            out["runtime"] = runtime(self.torch, self.device)
        if self.family is not None and self.family.guided():
            out["guidance_scale"] = self.guidance()
        cfg = self.config
        if cfg.guidance_rescale:
            out["guidance_rescale"] = cfg.guidance_rescale
        if cfg.refiner:
            out["refiner"], out["refiner_start"] = cfg.refiner, cfg.refiner_start
        out.update(cfg.scheduler_options())
        out.update(levers.fingerprint(cfg, self.context.resolve_path))
        return out

    def guidance(self) -> float:
        """Classifier-free guidance: the manifest's guidance_scale; unset, 7.5 for text-to-image
        (the field's default) and 1.0 (none) for a tag model, whose tags bind without it."""
        cfg = self.config
        if self.vocabulary is not None and "guidance_scale" not in cfg.model_fields_set:
            return 1.0
        return cfg.guidance_scale

    # -- conditions ---------------------------------------------------------------------------
    def condition(self, index: int) -> dict[str, Any]:
        cfg, classes = self.config, self.context.classes
        if self.vocabulary is not None:
            tags = cfg.tags[index % len(cfg.tags)] if cfg.tags else self.vocabulary.draw(self.context.seed, index)
            return {"tags": list(tags)}
        if cfg.templates is not None:
            cls = index % len(classes)
            own = cfg.templates_for(classes[cls])
            template = own[(index // len(classes)) % len(own)]
            cond = {"prompt": template.format(cls=classes[cls]), "class": cls}
        elif self._prompts is not None:
            cond = {"prompt": self._prompts[index % len(self._prompts)]}
        elif classes and self.family.class_conditional():
            # Only a class-conditional model makes class-labelled images; for any other model
            # [dataset].classes are label names (e.g. segmentation classes), not a condition.
            cond = {"class": index % len(classes)}
        else:
            return {}
        negative = cfg.negative_for(classes[cond["class"]] if cond.get("class") is not None else None)
        if "prompt" in cond and negative:
            cond["negative_prompt"] = negative
        if "prompt" in cond and cfg.prompt_2 is not None:
            cond["prompt_2"] = cfg.prompt_2
        return cond

    # -- sampling -----------------------------------------------------------------------------
    def latent_shape(self) -> tuple[int, ...] | None:
        return self.family.latent_shape() if self.family is not None else None  # known once set up

    def _generators(self, indices: Sequence[int], seed: int, op: str):
        return self._row_generators([(i, seed) for i in indices], op)

    def _row_generators(self, rows, op: str):
        """One CPU generator per (index, seed) row, seeded from (seed, index, op) alone."""
        return [self.torch.Generator("cpu").manual_seed(sample_seed(int(seed), int(index), op)) for index, seed in rows]

    def sample_latents(self, indices: Sequence[int], seed: int) -> np.ndarray:
        # Drawn on the CPU per sample, so a latent depends on (seed, index) only, not the device or batch.
        shape = self.latent_shape()
        return np.stack([self.torch.randn(shape, generator=g).numpy() for g in self._generators(indices, seed, "latent")])

    def decode(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int) -> np.ndarray:
        return self._decode(latents, conditions, indices, seed)

    @property
    def micro_batch(self) -> int:
        """Rows per model call: the manifest's micro_batch, else chosen from [run] batch_size."""
        return self.config.micro_batch or call_size(self.context.batch_size)

    def _decode(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, shifts: np.ndarray | None = None, spec=None) -> np.ndarray:
        # Torch's kernels give (slightly) different results for different batch sizes, never for
        # different neighbours: decode in groups of exactly micro_batch, padding the last one.
        latents = np.asarray(latents, dtype=np.float32)
        n, f = len(latents), self.micro_batch
        out = []
        for s in range(0, n, f):
            z, conds, idx = latents[s : s + f], list(conditions[s : s + f]), list(indices[s : s + f])
            shift = None if shifts is None else np.array(shifts[s : s + f], np.float32)  # a writable copy
            pad = f - len(z)
            if pad:
                z = np.concatenate([z, np.zeros((pad, *z.shape[1:]), np.float32)])
                shift = None if shift is None else np.concatenate([shift, np.zeros((pad, *shift.shape[1:]), np.float32)])
                # copies: a decode writes what it learns into each condition (a safety flag), and a
                # pad's must not land on the real sample it copies
                conds, idx = conds + [dict(conds[0]) for _ in range(pad)], idx + [idx[0]] * pad
            out.append(self._decode_group(z, conds, idx, seed, shift, spec)[: f - pad])
        return np.concatenate(out) if out else np.zeros((0, *self._image_shape()), np.uint8)

    def image_shape(self) -> tuple[int, int, int] | None:
        return self._image_shape() if self.pipe is not None else None  # known once set up

    def _image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.latent_shape()
        scale = self.family.image_scale()
        return (h * scale, w * scale, 3)

    def _decode_group(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, shift: np.ndarray | None = None, spec=None) -> np.ndarray:
        torch = self.torch
        z = torch.from_numpy(latents).to(self.device, self.dtype)
        gens = self._generators(indices, seed, DENOISE)
        with torch.inference_mode():
            if shift is None:
                return self.family.decode(z, conditions, gens)
            from .hspace import edited_steps, shifter

            with shifter(self, spec, torch.from_numpy(shift), edited_steps(self._fresh_scheduler().timesteps, spec)):
                return self.family.decode(z, conditions, gens)

    # -- h-space (Asyrp): shifts of a block's output that edit what every image shows --------------
    def _check_hspace(self) -> None:
        if not self.supports("hspace"):
            raise UsageError(f"hspace: {self.config.model} ({self.kind}) has no h-space edits")

    def hspace_spec(self, options: dict[str, Any]):
        from .hspace import spec_of

        self._check_hspace()
        return spec_of(self.pipe.unet, options)

    def hspace_shape(self, spec) -> tuple[int, ...]:
        from .hspace import block_shape

        shapes = self.__dict__.setdefault("_hspace_shapes", {})  # one UNet call per block, not per decode
        if spec.block not in shapes:
            shapes[spec.block] = block_shape(self, spec)
        return shapes[spec.block]

    def decode_shifted(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, shifts: np.ndarray, spec) -> np.ndarray:
        self._check_hspace()
        shifts = np.asarray(shifts, np.float32)
        if len(shifts) != len(latents) or tuple(shifts.shape[1:]) != self.hspace_shape(spec):
            raise UsageError(f"hspace: shifts have shape {tuple(shifts.shape)}, expected ({len(latents)}, {', '.join(map(str, self.hspace_shape(spec)))})")
        return self._decode(latents, conditions, indices, seed, shifts, spec)

    def hspace_activations(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, spec) -> tuple[np.ndarray, float]:
        """(B, *hspace_shape): each sample's h-space point (its block output, averaged over the
        edited steps of its own path), and the space's unit (the block's RMS)."""
        from .hspace import activations

        self._check_hspace()
        with self.torch.inference_mode():
            acts, units = [], []
            for s in range(0, len(latents), self.micro_batch):
                z = self.torch.from_numpy(np.asarray(latents[s : s + self.micro_batch], np.float32)).to(self.device, self.dtype)
                a, unit = activations(self, z, list(conditions[s : s + len(z)]), self._generators(indices[s : s + len(z)], seed, DENOISE), spec)
                acts.append(a)
                units.append(unit)
        return np.concatenate(acts), float(np.mean(units))

    def hspace_gradients(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, spec, objective) -> tuple[np.ndarray, float]:
        from .hspace import gradients

        self._check_hspace()
        latents = np.asarray(latents, np.float32)
        grads, units = [], []
        for s in range(0, len(latents), self.micro_batch):
            z = self.torch.from_numpy(latents[s : s + self.micro_batch]).to(self.device, self.dtype)
            g, unit = gradients(self, z, list(conditions[s : s + len(z)]), self._generators(indices[s : s + len(z)], seed, DENOISE), spec, objective)
            grads.append(g)
            units.append(unit)
        return np.concatenate(grads), float(np.mean(units))

    # -- per-pixel features (DatasetGAN / ddpm-segmentation) --------------------------------------
    def feature_spec(self, options: dict[str, Any] | FeatureOptions):
        from .features import FeatureSpec, available_blocks, check_spec

        opts = typed_options(FeatureOptions, options, "features")
        unet = self.pipe.unet
        blocks = opts.blocks or [b for b in available_blocks(unet) if b == "mid" or b.startswith("up")]
        spec = FeatureSpec(
            blocks=tuple(blocks),
            timesteps=tuple(opts.timesteps or (50, 150, 250)),
            noise_seed=int(opts.noise_seed or sample_seed(self.context.seed, 0, "feature-noise")),
            source=opts.source or "noised",
            inversion_steps=int(opts.inversion_steps or 20),
        )
        problems = check_spec(unet, self._train_schedule().config.num_train_timesteps, spec)
        if problems:
            raise UsageError(f"features of {self.config.model}: " + "; ".join(problems))
        return spec

    def feature_shapes(self, spec) -> list[tuple[int, int, int]]:
        from .features import pyramid_shapes

        return pyramid_shapes(self.pipe.unet, self.latent_shape()[1:], spec)

    def _step_kwargs(self, sched, gens) -> dict:
        """What sched.step takes of (generator, eta): pndm and unipc take neither (and need none)."""
        params = _step_params(sched)
        kw = {"generator": gens} if "generator" in params else {}
        if "eta" in params:
            kw["eta"] = self.config.eta
        return kw

    def _stochastic_sampler(self) -> bool:
        """Whether the configured sampler adds fresh noise at every step (then a trajectory is
        replayed with each sample's own noise generators, as decode seeded them)."""
        sched = self.pipe.scheduler
        name = type(sched).__name__
        if name in ("DDPMScheduler", "EulerAncestralDiscreteScheduler") or "sde" in str(sched.config.get("algorithm_type", "")):
            return True
        return name == "DDIMScheduler" and self.config.eta > 0

    def _train_schedule(self):
        from diffusers import DDPMScheduler

        if not hasattr(self, "_ddpm"):
            self._ddpm = DDPMScheduler.from_config(self.pipe.scheduler.config)
        return self._ddpm

    def _prediction_type(self) -> str:
        return self.pipe.scheduler.config.get("prediction_type", "epsilon")

    def _model_space(self, images: np.ndarray, conditions: list[dict]):
        """Clean model-space input x0 (pixels, or VAE latents for Stable Diffusion) and the UNet's
        conditioning kwargs (class labels or prompt embeddings, no guidance)."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        return self.family.model_space(x, conditions)

    def _grouped(self, fn, arrays: list, conditions: list[dict]):
        """``fn(*arrays_group, conditions_group)`` on groups of exactly micro_batch rows (the last
        padded with copies of its first row), results trimmed and joined: a row's result never
        depends on how many rows came with it (see decode)."""
        n, f = len(conditions), self.micro_batch
        outs = []
        for s in range(0, n, f):
            group = [None if a is None else np.asarray(a[s : s + f]) for a in arrays]
            conds = list(conditions[s : s + f])
            keep = len(conds)
            if keep < f:
                group = [None if g is None else np.concatenate([g] + [g[:1]] * (f - keep)) for g in group]
                conds += [conds[0]] * (f - keep)
            out = fn(*group, conds)
            outs.append([o[:keep] for o in out] if isinstance(out, list) else out[:keep])
        if outs and isinstance(outs[0], list):
            return [self.torch.cat([o[i] for o in outs]) for i in range(len(outs[0]))]
        return np.concatenate(outs)

    def features(self, images: np.ndarray, conditions: list[dict], spec, latents: np.ndarray | None = None, decode: Sequence[dict] | None = None) -> list:
        """Feature pyramid of images; with spec.source "trajectory" and the samples' initial
        ``latents``, read from their own denoising paths instead (see features.py); a stochastic
        sampler's path also needs each sample's ``decode`` {"index", "seed"}."""
        rows = None  # (index, seed) per row: only a stochastic sampler's replay needs them
        if spec.source == "trajectory" and latents is not None and self._stochastic_sampler():
            if decode is None or any(not isinstance(d, dict) or "index" not in d or "seed" not in d for d in decode):
                raise UsageError(
                    f"features: scheduler {self.config.scheduler!r} adds fresh noise at every step; replaying a sample's path needs its decode index and seed"
                )
            rows = np.array([(int(d["index"]), int(d["seed"])) for d in decode], dtype=object).reshape(-1, 2)
        return self._grouped(lambda im, z, dec, conds: self._features_group(im, conds, spec, z, dec), [images, latents, rows], list(conditions))

    def _features_group(self, images: np.ndarray, conditions: list[dict], spec, latents: np.ndarray | None, decode: np.ndarray | None = None) -> list:
        from .features import extract, extract_inverted

        torch = self.torch
        with torch.inference_mode():
            if spec.source == "trajectory" and latents is not None:
                return self._trajectory_features(latents, conditions, spec, decode)
            x0, kwargs = self._model_space(images, conditions)
            alphas = self._train_schedule().alphas_cumprod
            if spec.source == "noised":
                return extract(self.pipe.unet, alphas, x0, spec, kwargs)
            return extract_inverted(self.pipe.unet, alphas, x0, spec, self._prediction_type(), kwargs)

    def _fresh_scheduler(self):
        # the pipeline's scheduler keeps state between steps (multistep solvers): never share it
        sched = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        sched.set_timesteps(self.config.steps)
        return sched

    def _trajectory_features(self, latents: np.ndarray, conditions: list[dict], spec, decode: np.ndarray | None = None) -> list:
        from .features import TrajectoryCapture, nearest_steps

        torch = self.torch
        z = torch.from_numpy(np.asarray(latents, dtype=np.float32)).to(self.device, self.dtype)
        sched = self._fresh_scheduler()
        mapping = nearest_steps(sched.timesteps.tolist(), spec.timesteps)
        # a stochastic sampler draws each step's noise from the sample's own generator, seeded as
        # decode seeds it: the replay walks the same path (features() passes no rows for a
        # deterministic sampler)
        gens = None if decode is None else self._row_generators(decode, DENOISE)
        with TrajectoryCapture(self.pipe.unet, spec.blocks, set(mapping.values()), len(z)) as cap:
            self.family.replay(sched, z, conditions, cap, gens)
        return cap.pyramid(mapping, spec.timesteps)

    # -- where the condition acts (the attention labeller) -------------------------------------
    def named_classes(self, conditions: list[dict]) -> np.ndarray:
        """Which of [dataset].classes each condition names: a tag model's tags, a prompt's class
        words (whole words, case-insensitive), or a class-conditional model's class."""
        classes = self.context.classes
        out = super().named_classes(conditions)
        for i, cond in enumerate(conditions):
            said = cond.get("tags")
            if said is None and cond.get("prompt") is not None:
                text = f" {' '.join(words(cond['prompt']))} "
                said = [c for c in classes if f" {' '.join(words(c))} " in text]
            for k, c in enumerate(classes):
                out[i, k] |= c in (said or ())
        return out

    def attention_spec(self, options: dict[str, Any]):
        from .attention import attention_spec

        return attention_spec(self, options)

    def attention(self, images: np.ndarray, conditions: list[dict], spec, latents: np.ndarray | None = None, decode: Sequence[dict] | None = None):
        """Cross-attention of each class's tokens (see attention.py): a tag model's tags, or the
        class words of a Stable Diffusion prompt."""
        from .attention import read_attention

        self._require_class_tokens()
        return self._maps(read_attention, images, conditions, spec, latents, decode)

    def _require_class_tokens(self) -> None:
        """Attention reads class tokens: a tag model's or a text-to-image model's prompt words."""
        if self.vocabulary is None and self.kind != "text2image":
            raise UsageError(f"attention: {self.config.model} has no class tokens to attend to (a tag model of `synth fit`, or use method = \"contrast\")")

    def attention_tokens(self, images: np.ndarray, conditions: list[dict], masks: np.ndarray, spec, latents: Sequence | None = None,
                         decode: Sequence[dict] | None = None, background: int = 0, steps: int = 200, lr: float = 0.05, batch: int = 16):
        """Attribution tokens fitted to labelled images (see attention.fit_tokens); the spec made
        with them (``attention_spec({..., "tokens": tokens})``) reads each class from its token.
        ``latents``: per image its initial latent (read along its path) or None (noised)."""
        from .attention import fit_tokens

        self._require_class_tokens()
        latents = list(latents) if latents is not None else [None] * len(images)
        parts = []
        for with_path in (True, False):
            idx = [i for i, z in enumerate(latents) if (z is not None) == with_path]
            for s in range(0, len(idx), batch):
                rows = np.array(idx[s : s + batch])
                if not with_path:
                    parts.append((rows, None, None))
                    continue
                z = np.stack([latents[i] for i in rows])
                parts.append((rows, z, self._decode_rows(z, None if decode is None else [decode[i] for i in rows])))
        return fit_tokens(self, images, list(conditions), masks, spec, parts, background, steps, lr)

    def contrast(self, images: np.ndarray, conditions: list[dict], spec, latents: np.ndarray | None = None, decode: Sequence[dict] | None = None):
        """Where the prediction moves when each class leaves the condition (see attention.py)."""
        from .attention import read_contrast

        if self.vocabulary is None and not self.family.class_conditional():
            raise UsageError(f"contrast: {self.config.model} is not conditioned on classes or tags")
        return self._maps(read_contrast, images, conditions, spec, latents, decode)

    def _maps(self, read, images, conditions, spec, latents, decode):
        from .attention import AttentionMaps

        rows = self._decode_rows(latents, decode) if latents is not None else None
        classes, named, null, selfs = self._grouped(lambda im, z, dec, conds: read(self, im, conds, spec, z, dec), [images, latents, rows], list(conditions))
        side = spec.self_attention
        keep = selfs.numel() > 0
        return AttentionMaps(classes.numpy(), named.numpy().astype(bool), null.numpy(), selfs.numpy() if keep else None, (side, side) if keep else None)

    def _decode_rows(self, latents, decode):
        """(index, seed) per row for replaying a stochastic sampler's path (None otherwise)."""
        if not self._stochastic_sampler():
            return None
        if decode is None or any(not isinstance(d, dict) or "index" not in d or "seed" not in d for d in decode):
            raise UsageError(f"scheduler {self.config.scheduler!r} adds fresh noise at every step; replaying a sample's path needs its decode index and seed")
        return np.array([(int(d["index"]), int(d["seed"])) for d in decode], dtype=object).reshape(-1, 2)

    def inversion_condition(self, condition: dict[str, Any], index: int, guided: str = "negative_prompt") -> dict[str, Any]:
        return self.family.inversion_condition(dict(condition), index, guided)

    def invert(self, images: np.ndarray, conditions: list[dict], options: dict | InvertOptions | None = None) -> np.ndarray:
        """Initial latents that the deterministic sampler (ddim, eta 0) decodes back to about
        these images, along the sampler's own timesteps (see inversion.py). ``options``:
        method ("ddim" | "fixed_point"), steps (default: the generator's), iterations."""
        if self._stochastic_sampler():
            raise UsageError(
                f"invert: scheduler {self.config.scheduler!r} adds fresh noise at every step, so no latent decodes back to the image; "
                "use a deterministic one (ddim with eta 0, euler, dpm++, pndm, unipc)"
            )
        opts = typed_options(InvertOptions, options, "invert")
        return self._grouped(lambda im, conds: self._invert_group(im, conds, opts), [images], list(conditions))

    def _invert_group(self, images: np.ndarray, conditions: list[dict], options: InvertOptions) -> np.ndarray:
        from .inversion import invert

        torch = self.torch
        with torch.inference_mode():
            x0, kwargs = self._model_space(images, conditions)
            sched = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
            sched.set_timesteps(int(options.steps or self.config.steps))
            grid = sorted({int(t) for t in sched.timesteps.tolist()})
            final = getattr(sched, "final_alpha_cumprod", None)
            x = invert(
                self.pipe.unet, self._train_schedule().alphas_cumprod, x0, grid, self._prediction_type(),
                method=options.method, iterations=options.iterations, unet_kwargs=kwargs,
                a_start=float(final) if final is not None else 1.0, dtype=self.dtype,
            )
            return x.float().cpu().numpy()

    def compose(self, latents_a: np.ndarray, latents_b: np.ndarray, masks: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, blend_until: float = 0.7) -> np.ndarray:
        """Mask-blended denoising: B's latent is denoised as a whole while, for the first
        ``blend_until`` of the steps, the pixels inside ``masks`` (N, H, W in 0..1) are replaced by
        A's own trajectory at the same step; the last steps run free, so the two parts grow into
        one image. Stable Diffusion blends in its latent space (the masks area-averaged to the
        latent's size), both paths guided as the pipeline guides them and under A's prompt."""
        f = self.micro_batch
        out = []
        for s in range(0, len(latents_a), f):
            za, zb, m = latents_a[s : s + f], latents_b[s : s + f], masks[s : s + f]
            conds, idx = list(conditions[s : s + f]), list(indices[s : s + f])
            keep = len(za)
            if keep < f:  # the same fixed group size as decode
                pad = f - keep
                za, zb, m = (np.concatenate([a, np.repeat(a[:1], pad, 0)]) for a in (za, zb, m))
                conds, idx = conds + [conds[0]] * pad, idx + [idx[0]] * pad
            out.append(self.family.compose(za, zb, m, conds, idx, seed, blend_until)[:keep])
        return np.concatenate(out)

    def edit(self, images: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, strength: float) -> np.ndarray:
        """SDEdit (Meng et al.): each image noised to ``strength`` of the sampler's path and
        denoised under its condition; its noise from (seed, index, "edit-noise"). Groups of
        micro_batch rows, as decode, so a result never depends on its neighbours."""
        if self._stochastic_sampler() or self.config.scheduler == "pndm":
            raise UsageError(f"img2img: scheduler {self.config.scheduler!r} cannot start part-way along its path here; use ddim, euler, dpm++ or unipc")
        idx = np.asarray(list(indices), dtype=np.int64)

        def group(im, ix, conds):
            with self.torch.inference_mode():
                x0, _ = self._model_space(im, conds)
            return self.family.edit(x0, conds, [int(i) for i in ix], seed, strength)

        return self._grouped(group, [images, idx], list(conditions))

    def bundled(self, kind: str) -> list[Path]:
        """``<model folder>/<kind>`` of a local pipeline (e.g. pixelheads/ beside unet/)."""
        folder = Path(self.model_ref or "") / kind
        return [folder] if self.model_ref and folder.is_dir() else []

    def fingerprint(self) -> str:
        """The generator's identity for caches keyed by it (a trained head, calibrations): its
        settings, and the weights: a local UNet's file hashes (read once per process), or a hub
        model's resolved commit, which pins them."""
        import json

        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        ident = self.describe()
        ident.pop("runtime", None)  # the machine: caches keyed by the model (a trained head) hold across machines
        ident.update(self._weights_identity())
        out = json.dumps(ident, sort_keys=True, default=str)
        if self.pipe is not None:  # settled once the model is loaded
            self._fingerprint = out
        return out

    def _weights_identity(self) -> dict[str, str]:
        import hashlib

        local = Path(self.model_ref or "")
        if self.model_ref and not local.exists():
            commit = hub_commit(self.model_ref, self.config.revision)
            return {"hub_commit": commit} if commit else {}
        out = {}
        for f in sorted(local.glob("unet/*.safetensors")) + sorted(local.glob("unet/*.bin")):
            digest = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(block)
            out[f"sha256:{f.name}"] = digest.hexdigest()
        return out


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub model resolves to in the local cache (what was loaded), or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True)).name
    except Exception:  # not cached, or no huggingface_hub: the settings still identify it
        return None


def typed_options(model, options, where: str):
    """A stage's options for invert or features as the generator's own model (a dict is
    validated; a wrong option is one line naming it, e.g. "invert.method: ...")."""
    from pydantic import ValidationError

    from synth.manifest import format_errors

    if isinstance(options, model):
        return options
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as e:
        raise UsageError("; ".join(format_errors(e, where))) from None


def call_size(batch_size: int, most: int = 16) -> int:
    """The rows per model call for batches of ``batch_size``: between half of ``most`` (or of the
    batch) and ``most``, the size that pads a batch least, the larger on a tie. Every call has
    this size (a short group padded), since torch's results depend on the call size; choosing it
    to fit the batch keeps the padding to a run's last, partial batch. Outside a run: ``most``."""
    if batch_size <= 0:
        return most
    top = min(batch_size, most)
    return min(range((top + 1) // 2, top + 1), key=lambda f: (-(-batch_size // f) * f, -f))


def words(text: str) -> list[str]:
    """Lower-case words of a prompt or class name ("traffic_light" -> ["traffic", "light"])."""
    import re

    return re.findall(r"[a-z0-9]+", text.lower())


def _step_params(sched) -> set[str]:
    import inspect

    return set(inspect.signature(sched.step).parameters)


def runtime(torch, device) -> dict[str, Any]:
    """What the pixels also depend on besides the model and settings: torch, CUDA and the device's
    name (kernels differ between them), recorded with every sample so that a difference on
    another machine can be named."""
    import platform

    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"{dev.type} {platform.machine()}"
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "device": name}
