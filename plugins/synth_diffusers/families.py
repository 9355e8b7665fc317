"""What differs between the model families the diffusers generator runs, each on the shared
generator (weights, scheduler, seeds, micro-batches, features, inversion, attention):

- PixelFamily: a UNet2DModel (unconditional or class-conditional) or a tag-conditioned
  UNet2DConditionModel of `synth fit`, sampled in pixel space by synth's own loop (one loop for
  decode and every replay of a sample's path, so they cannot drift apart);
- TextFamily: Stable Diffusion, text-to-image in a VAE's latent space, sampled by the pipeline.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from synth.errors import RunError, UsageError

from .tags import load_encoder, read_vocabulary


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def call_params(pipe) -> set[str]:
    import inspect

    return set(inspect.signature(pipe.__call__).parameters)


class Family:
    kind: str = ""

    def __init__(self, gen):
        self.gen = gen

    def setup(self, model_ref: str) -> None:
        """Checks and family-specific loading once the pipeline is loaded."""

    def latent_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def image_scale(self) -> int:
        """Image pixels per latent pixel."""
        return 1

    def decode(self, z, conditions: list[dict], gens) -> np.ndarray:
        raise NotImplementedError

    def model_space(self, x, conditions: list[dict]):
        """Clean model-space input x0 of images x (B, 3, H, W in [-1, 1]) and the UNet's
        conditioning kwargs (no guidance)."""
        raise NotImplementedError

    def replay(self, sched, z, conditions: list[dict], cap, gens) -> None:
        """Walk the samples' own denoising paths until ``cap`` has seen every wanted step."""
        raise NotImplementedError

    def compose(self, za, zb, masks, conditions: list[dict], indices, seed: int, blend_until: float) -> np.ndarray:
        """One micro-batch of mask-blended denoising (see DiffusersGenerator.compose): A's and
        B's latents denoised side by side with the family's own guided prediction, B's replaced
        by A's inside the mask (at the latent's resolution) for the first ``blend_until`` steps."""
        from .generator import DENOISE

        gen = self.gen
        torch = gen.torch
        to = lambda a: torch.from_numpy(np.asarray(a, np.float32)).to(gen.device, gen.dtype)  # noqa: E731
        sched_a, sched = gen._fresh_scheduler(), gen._fresh_scheduler()
        xa, x = to(za) * sched_a.init_noise_sigma, to(zb) * sched.init_noise_sigma
        m = self.latent_masks(to(masks))
        predict = self.predictor(conditions)
        gens_a = gen._generators(indices, seed, DENOISE)
        gens = gen._generators(indices, seed, "compose-denoise")
        kw_a, kw = gen._step_kwargs(sched_a, gens_a), gen._step_kwargs(sched, gens)
        steps = len(sched.timesteps)
        with torch.inference_mode():
            for i, t in enumerate(sched.timesteps):
                eps_a = predict(sched_a.scale_model_input(xa, t), t)
                xa = sched_a.step(eps_a, t, xa, **kw_a).prev_sample
                eps = predict(sched.scale_model_input(x, t), t)
                x = sched.step(eps, t, x, **kw).prev_sample
                if i < blend_until * steps:
                    x = m * xa + (1 - m) * x
            return self.finish(x)

    def edit(self, x0, conditions: list[dict], indices, seed: int, strength: float) -> np.ndarray:
        """SDEdit on one micro-batch: clean model-space samples ``x0`` noised to the sampler's
        step at ``strength`` (1: pure noise, the whole path) with each sample's own noise, then
        denoised from there with the family's guided prediction."""
        gen = self.gen
        torch = gen.torch
        sched = gen._fresh_scheduler()
        n = len(sched.timesteps)
        start = min(int(round(n * (1.0 - strength))), n - 1)
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(start)  # sigma schedulers (euler, dpm++) index their noise by step
        steps = sched.timesteps[start:]
        noise = torch.stack([torch.randn(tuple(x0.shape[1:]), generator=g) for g in gen._generators(indices, seed, "edit-noise")]).to(x0.device, x0.dtype)
        x = sched.add_noise(x0, noise, steps[:1].repeat(len(x0)))
        predict = self.predictor(conditions)
        kw = gen._step_kwargs(sched, gen._generators(indices, seed, "edit-denoise"))
        with torch.inference_mode():
            for t in steps:
                x = sched.step(predict(sched.scale_model_input(x, t), t), t, x, **kw).prev_sample
            return self.finish(x)

    def sample(self, sched, z, conditions, gens, stop=None, capture=None, visit=None, steps=None):
        """The family's sampling loop with its own guided prediction (``predictor``): the pixel
        family's decode and every replay of a sample's path (trajectory features, attention maps,
        contrasts, h-space) run it, so they cannot drift apart; for Stable Diffusion it is the
        pipeline's loop written out (its end matches the pipeline's image to a rounding step).
        ``stop()``, asked after each step's UNet call, ends it early; ``capture`` (an
        attention.AttentionCapture) records the conditional pass; ``visit(x, t)`` sees the model
        input. With ``steps`` (sampler timesteps) only those are recorded and visited, and the loop
        ends once all are seen."""
        x = z * sched.init_noise_sigma
        predict = self.predictor(conditions, capture)
        kw = self.gen._step_kwargs(sched, gens)
        left = None if steps is None else set(steps)
        feedback, total = self.gen.feedback, len(sched.timesteps)
        for i, t in enumerate(sched.timesteps):
            wanted = left is None or int(t) in left
            xin = sched.scale_model_input(x, t)
            if visit is not None and wanted:
                visit(xin, t)
            out = predict(xin, t, record=wanted)
            if feedback is not None and feedback.active(i, total):
                out = feedback.guide(out, xin, t, conditions, self.gen._prediction_type())
            if left is not None:
                left.discard(int(t))
            if (stop is not None and stop()) or left == set():
                break
            x = sched.step(out, t, x, **kw).prev_sample
        return x

    def predictor(self, conditions: list[dict], capture=None):
        """``predict(x, t, record=False)``: the guided model output; ``capture`` records the
        conditional pass of calls made with ``record``."""
        raise NotImplementedError

    def latent_masks(self, m):
        """Masks (N, H, W) in 0..1 at the image's size -> (N, 1, h, w) at the latent's."""
        raise NotImplementedError

    def finish(self, x) -> np.ndarray:
        """Denoised model-space samples -> uint8 images."""
        raise NotImplementedError

    def clean_pixels(self, x0):
        """A clean-sample estimate in model space -> images (N, 3, H, W) in [0, 1], differentiable
        in it (feedback guidance's classifier input)."""
        raise NotImplementedError

    def class_conditional(self) -> bool:
        """Whether the model takes [dataset].classes as a condition (class labels)."""
        return False

    def lacks(self) -> frozenset[str]:
        """The generator's capabilities this family does not offer (yet)."""
        return frozenset()

    def stacks_guidance(self) -> bool:
        """Whether a guided UNet call stacks the unconditional rows before the conditional ones
        (Stable Diffusion's) rather than running the conditional pass alone (the pixel family's)."""
        return False

    def inversion_condition(self, cond: dict, index: int, guided: str) -> dict:
        """See Generator.inversion_condition: a pixel model's image keeps its own condition."""
        return cond

    def guided(self) -> bool:
        """Whether classifier-free guidance applies (and is recorded)."""
        return False


class PixelFamily(Family):
    kind = "unet2d"

    def setup(self, model_ref: str) -> None:
        gen, cfg = self.gen, self.gen.config
        unet = gen.pipe.unet
        if type(unet).__name__ == "UNet2DConditionModel":
            gen.vocabulary = read_vocabulary(Path(model_ref))
        if type(unet).__name__ != "UNet2DModel" and gen.vocabulary is None:
            raise RunError(
                f"generator.model: unsupported pipeline {type(gen.pipe).__name__} with a {type(unet).__name__} "
                "(expected a UNet2DModel, a tag-conditioned model of `synth fit`, or Stable Diffusion)"
            )
        if gen._prompts or cfg.templates:
            what = "a tag-conditioned pipeline; it takes tags, not prompts" if gen.vocabulary is not None else "an unconditional pipeline; it takes no prompts"
            raise UsageError(f"generator: {cfg.model} is {what} or templates")
        if gen.vocabulary is not None:
            gen.tag_encoder = load_encoder(Path(model_ref), gen.vocabulary).to(gen.device, gen.dtype)
            problems = [p for i, tags in enumerate(cfg.tags or []) for p in gen.vocabulary.check(tags, f"generator.tags[{i}]")]
            if problems:
                raise UsageError(problems[0])
        elif cfg.tags is not None:
            raise UsageError(f"generator.tags: {cfg.model} is not conditioned on tags")
        gen.num_class_embeds = unet.config.num_class_embeds
        classes = gen.context.classes
        if gen.num_class_embeds and not classes:
            raise UsageError(f"generator: {cfg.model} is class-conditional ({gen.num_class_embeds} classes); list them in [dataset].classes")
        if gen.num_class_embeds and len(classes) > gen.num_class_embeds:
            raise UsageError(f"[dataset].classes lists {len(classes)} classes, the model knows {gen.num_class_embeds}")

    def latent_shape(self):
        unet = self.gen.pipe.unet
        size = unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (unet.config.in_channels, h, w)

    def class_conditional(self) -> bool:
        return bool(self.gen.num_class_embeds)

    def guided(self) -> bool:
        return self.gen.vocabulary is not None

    def decode(self, z, conditions, gens) -> np.ndarray:
        sched = self.gen.pipe.scheduler
        sched.set_timesteps(self.gen.config.steps)
        x = self.sample(sched, z, conditions, gens)
        x = (x.float() / 2 + 0.5).clamp(0, 1)
        return to_uint8(x.permute(0, 2, 3, 1).cpu().numpy())

    def replay(self, sched, z, conditions, cap, gens) -> None:
        self.sample(sched, z, conditions, gens, stop=cap.done)  # the rest of the path is not needed

    def predictor(self, conditions: list[dict], capture=None):
        """The pixel UNet's guided output for x at t under these conditions. The conditional pass
        runs first and alone (never stacked with the unconditional one), so a sample's pixels and
        what ``capture`` records of that pass (with ``record``) do not depend on guidance."""
        gen = self.gen
        unet, kwargs = gen.pipe.unet, self.unet_kwargs(conditions)
        scale = gen.guidance()
        null = self.unet_kwargs(conditions, null=True) if gen.vocabulary is not None and scale != 1.0 else None

        def predict(x, t, record=False):
            if capture is not None:
                capture.active = record
            out = unet(x, t, **kwargs).sample
            if capture is not None:
                capture.active = False
            if null is None:
                return out
            base = unet(x, t, **null).sample
            return base + scale * (out - base)

        return predict

    def model_space(self, x, conditions):
        gen = self.gen
        _, h, w = self.latent_shape()
        if x.shape[-2:] != (h, w):
            raise UsageError(f"features: images are {x.shape[-1]}x{x.shape[-2]}, {gen.config.model} works at {w}x{h}; resize the source")
        return x.to(gen.dtype), self.unet_kwargs(conditions)

    def unet_kwargs(self, conditions: list[dict], null: bool = False, without: int | None = None) -> dict:
        """The pixel UNet's conditioning for these samples: class labels, or the tag tokens
        (``null``: none of them, the unconditional pass; ``without``: all but that tag's slot)."""
        gen = self.gen
        if gen.vocabulary is None:
            labels = self.class_labels(conditions)
            return {} if labels is None else {"class_labels": labels}
        if any(not isinstance(c.get("tags"), list) for c in conditions):
            raise UsageError(f"{gen.config.model} is conditioned on tags and a sample has none in its condition")
        torch = gen.torch
        presence = torch.from_numpy(gen.vocabulary.presence([c["tags"] for c in conditions])).to(gen.device)
        if null:
            presence = torch.zeros_like(presence)
        elif without is not None:
            presence = presence.clone()
            presence[:, without] = False
        states, mask = gen.tag_encoder(presence)
        return {"encoder_hidden_states": states.to(gen.dtype), "encoder_attention_mask": mask.to(gen.dtype)}

    def class_labels(self, conditions: list[dict]):
        gen = self.gen
        if not gen.num_class_embeds:
            return None
        if any(c.get("class") is None for c in conditions):
            raise UsageError(f"features: {gen.config.model} is class-conditional and a sample has no class label")
        return gen.torch.tensor([c["class"] for c in conditions], device=gen.device)

    def latent_masks(self, m):
        return m[:, None]

    def finish(self, x) -> np.ndarray:
        x = (x.float() / 2 + 0.5).clamp(0, 1)
        return to_uint8(x.permute(0, 2, 3, 1).cpu().numpy())

    def clean_pixels(self, x0):
        return (x0 / 2 + 0.5).clamp(0, 1)


class TextFamily(Family):
    kind = "text2image"

    def setup(self, model_ref: str) -> None:
        gen = self.gen
        if gen.config.safety_checker == "off" and "safety_checker" in gen.pipe.components:
            gen.pipe.safety_checker = None
        if not (gen._prompts or gen.config.templates):
            raise UsageError(f"generator: {gen.config.model} is a text-to-image pipeline; give prompts, prompts_file or templates")
        gen.refiner = None
        if gen.config.refiner is not None:
            gen.refiner = self.load_refiner()
        for field in ("prompt_2", "negative_prompt_2"):
            if getattr(gen.config, field) is not None and not self.xl():
                raise UsageError(f"generator.{field}: {gen.config.model} has one text encoder; {field} is for Stable Diffusion XL's second")

    def latent_shape(self):
        gen = self.gen
        unet, scale = gen.pipe.unet, gen.pipe.vae_scale_factor
        default = unet.config.sample_size * scale
        h, w = gen.config.height or default, gen.config.width or default
        return (unet.config.in_channels, h // scale, w // scale)

    def image_scale(self) -> int:
        return self.gen.pipe.vae_scale_factor

    def lacks(self) -> frozenset[str]:
        return frozenset({"contrast", "condition:tags"})

    def stacks_guidance(self) -> bool:
        return self.gen.guidance() > 1.0  # as guided_kwargs decides

    def guided_kwargs(self, conditions: list[dict]) -> tuple[dict, bool]:
        """The UNet's conditioning as the pipeline builds it: with guidance, the negative (or
        empty) prompts' rows stacked before the prompts' (SDXL: and its added conditions)."""
        gen = self.gen
        pipe, n = gen.pipe, len(conditions)
        cfg = gen.guidance() > 1.0
        prompts = [c["prompt"] for c in conditions]
        negative = [c.get("negative_prompt", "") for c in conditions] if any("negative_prompt" in c for c in conditions) else None
        if not self.xl():
            pos, neg = pipe.encode_prompt(prompts, gen.device, 1, cfg, negative_prompt=negative)
            return {"encoder_hidden_states": torch_cat(gen, [neg, pos]) if cfg else pos}, cfg
        second = [c.get("prompt_2") or c["prompt"] for c in conditions]
        negative_2 = [c.get("negative_prompt_2") or c.get("negative_prompt", "") for c in conditions] if negative is not None else None
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompts, prompt_2=second, device=gen.device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
            negative_prompt=negative, negative_prompt_2=negative_2,
        )
        _, h, w = self.latent_shape()
        size = (h * self.image_scale(), w * self.image_scale())
        ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=pos.dtype, text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
        ids = ids.to(gen.device).repeat(n, 1)
        if cfg:
            pos, pooled, ids = torch_cat(gen, [neg, pos]), torch_cat(gen, [neg_pooled, pooled]), torch_cat(gen, [ids, ids])
        return {"encoder_hidden_states": pos, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}}, cfg

    def predictor(self, conditions: list[dict], capture=None):
        """The guided noise prediction, computed as the pipeline computes it (one UNet call on
        the stacked rows; guidance_rescale as it rescales); ``capture`` keeps the last B rows
        of a guided call, the conditional ones."""
        gen = self.gen
        kwargs, cfg = self.guided_kwargs(conditions)
        scale, rescale = gen.guidance(), gen.config.guidance_rescale

        def unet(x, t, record):
            if capture is not None:
                capture.active = record
            try:
                return gen.pipe.unet(x, t, **kwargs).sample
            finally:
                if capture is not None:
                    capture.active = False

        def predict(x, t, record=False):
            if not cfg:
                return unet(x, t, record)
            uncond, text = unet(torch_cat(gen, [x, x]), t, record).chunk(2)
            out = uncond + scale * (text - uncond)
            if rescale > 0:
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

                out = rescale_noise_cfg(out, text, guidance_rescale=rescale)
            return out

        return predict

    def latent_masks(self, m):
        import torch.nn.functional as F

        _, h, w = self.latent_shape()
        return F.interpolate(m[:, None].float(), size=(h, w), mode="area").to(m.dtype)

    def finish(self, x) -> np.ndarray:
        gen = self.gen
        vae = gen.pipe.vae
        with vae_upcast(gen):
            images = vae.decode(x.to(vae.dtype) / vae.config.scaling_factor).sample
        return to_uint8(gen.pipe.image_processor.postprocess(images.float(), output_type="np"))

    def clean_pixels(self, x0):
        vae = self.gen.pipe.vae
        with vae_upcast(self.gen):
            images = vae.decode(x0.to(vae.dtype) / vae.config.scaling_factor).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def inversion_condition(self, cond: dict, index: int, guided: str) -> dict:
        """A real image brings no prompt: it takes the generator's own for its index (its
        class's template where the image has a class). Under guidance, with "negative_prompt",
        the prompt is also its own negative (Miyake et al., negative-prompt inversion): the
        guided prediction is then the conditional one the inversion followed, so the latent
        decodes back to the image at any guidance_scale, without null-text optimisation."""
        gen = self.gen
        if "prompt" not in cond:
            own = gen.condition(index)
            if cond.get("class") is not None and gen.config.templates is not None:
                own = gen.condition(int(cond["class"]) + len(gen.context.classes) * (index // max(len(gen.context.classes), 1)))
            cond = {**own, **cond}
        if guided == "negative_prompt" and gen.guidance() > 1.0:
            cond["negative_prompt"] = cond["prompt"]
            if self.xl():
                cond["negative_prompt_2"] = cond.get("prompt_2") or cond["prompt"]
        return cond

    def guided(self) -> bool:
        return True

    def call(self, z, conditions, **kwargs):
        """The pipeline on these latents and conditions with the manifest's settings."""
        gen = self.gen
        cfg = gen.config
        _, h, w = self.latent_shape()
        scale = self.image_scale()
        if cfg.negative_prompt or any("negative_prompt" in c for c in conditions):
            kwargs["negative_prompt"] = [c.get("negative_prompt", "") for c in conditions]
        if cfg.prompt_2 is not None:
            kwargs["prompt_2"] = [c.get("prompt_2") or c["prompt"] for c in conditions]
        if cfg.negative_prompt_2 is not None or any("negative_prompt_2" in c for c in conditions):
            kwargs["negative_prompt_2"] = [c.get("negative_prompt_2", cfg.negative_prompt_2 or c.get("negative_prompt", "")) for c in conditions]
        if cfg.guidance_rescale:
            kwargs["guidance_rescale"] = cfg.guidance_rescale
        if "eta" in call_params(gen.pipe):
            kwargs["eta"] = cfg.eta
        return gen.pipe(
            prompt=[c["prompt"] for c in conditions],
            latents=z,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            height=h * scale,
            width=w * scale,
            **kwargs,
        )

    def decode(self, z, conditions, gens) -> np.ndarray:
        if self.gen.refiner is not None:
            return self.refine(z, conditions, gens)
        if self.gen.feedback is not None:
            return self.decode_guided(z, conditions, gens)
        out = self.call(z, conditions, generator=gens, output_type="np")
        self.flag(conditions, getattr(out, "nsfw_content_detected", None))  # a pipeline output field, present with a safety checker
        return to_uint8(np.asarray(out.images))

    def decode_guided(self, z, conditions, gens) -> np.ndarray:
        """Feedback guidance rewrites each step's noise prediction, which the pipeline's call
        cannot take: the loop written out (the pipeline's image to a rounding step), then the
        pipeline's own safety check."""
        gen = self.gen
        images = self.finish(self.sample(gen._fresh_scheduler(), z, conditions, gens))
        if getattr(gen.pipe, "safety_checker", None) is not None:
            checked, flags = gen.pipe.run_safety_checker(images.astype(np.float32) / 255, gen.device, gen.dtype)
            self.flag(conditions, flags)
            images = to_uint8(np.asarray(checked))
        return images

    def flag(self, conditions, flags) -> None:
        """The safety checker's verdicts into the samples' conditions (dropped where asked)."""
        for c, flag in zip(conditions, flags if flags is not None else []):
            c["nsfw_flagged"] = bool(flag)
            if flag and self.gen.config.safety_checker == "drop":
                c["withheld"] = "the safety checker flagged the image"

    def refine(self, z, conditions, gens) -> np.ndarray:
        """SDXL's ensemble of experts: the base denoises the first refiner_start of the steps and
        hands its latents to the refiner, which denoises the rest under the same prompts."""
        gen, cfg = self.gen, self.gen.config
        start = cfg.refiner_start
        latents = self.call(z, conditions, generator=gens, output_type="latent", denoising_end=start).images
        kwargs = {}
        if any("negative_prompt" in c for c in conditions) or cfg.negative_prompt:
            kwargs["negative_prompt"] = [c.get("negative_prompt", "") for c in conditions]
        if cfg.prompt_2 is not None:
            kwargs["prompt_2"] = [c.get("prompt_2") or c["prompt"] for c in conditions]
        out = gen.refiner(
            prompt=[c["prompt"] for c in conditions], image=latents, num_inference_steps=cfg.steps, denoising_start=start,
            guidance_scale=cfg.guidance_scale, generator=gens, output_type="np", **kwargs,
        )
        return to_uint8(np.asarray(out.images))

    def replay(self, sched, z, conditions, cap, gens) -> None:
        """The pipeline's own loop (guidance included) until every wanted step is seen."""

        def stop_when_done(pipe, i, t, kwargs):
            if cap.done():
                pipe._interrupt = True
            return kwargs

        self.call(z, conditions, output_type="latent", callback_on_step_end=stop_when_done, generator=gens)

    def load_refiner(self):
        from .loading import load_pipeline

        gen, cfg = self.gen, self.gen.config
        if not self.xl():
            raise UsageError(f"generator.refiner: a refiner takes SDXL's latents; {cfg.model} is not SDXL")
        ref = gen._resolve_model_ref(gen.context.registry.resolve_model(cfg.refiner))
        refiner = load_pipeline(ref, cfg.model_copy(update={"lora": [], "textual_inversion": [], "revision": None}), gen.dtype, field="generator.refiner")
        if type(refiner).__name__ != "StableDiffusionXLImg2ImgPipeline":
            raise UsageError(f"generator.refiner: {cfg.refiner} is a {type(refiner).__name__}, not an SDXL refiner (StableDiffusionXLImg2ImgPipeline)")
        refiner.set_progress_bar_config(disable=True)
        refiner.scheduler = type(gen.pipe.scheduler).from_config(gen.pipe.scheduler.config)  # the base's sampler, continued
        return refiner.to(gen.device)

    def xl(self) -> bool:
        """Stable Diffusion XL: two text encoders, and added conditions (the second encoder's
        pooled output and the size / crop ids) that every UNet call takes."""
        return getattr(self.gen.pipe, "text_encoder_2", None) is not None

    def model_space(self, x, conditions):
        return self.encode_images(x), self.unet_kwargs(conditions)

    def encode_images(self, x):
        """VAE latents of images x in [-1, 1]: in float32 where the VAE's config says fp16
        overflows (SDXL's force_upcast: its fp16 encode gives NaNs), as the pipelines decode."""
        gen = self.gen
        vae = gen.pipe.vae
        with vae_upcast(gen):
            z = vae.encode(x.to(vae.dtype)).latent_dist.mean * vae.config.scaling_factor
        return z.to(gen.dtype)

    def unet_kwargs(self, conditions: list[dict]) -> dict:
        """The UNet's conditioning for these samples' prompts, without guidance: the text
        encoder's states; for SDXL both encoders' (and prompt_2) and the added conditions."""
        gen = self.gen
        pipe, prompts = gen.pipe, [c.get("prompt", "") for c in conditions]
        if not self.xl():
            embeds, _ = pipe.encode_prompt(prompt=prompts, device=gen.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
            return {"encoder_hidden_states": embeds}
        second = [c.get("prompt_2") or c.get("prompt", "") for c in conditions]
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=second, device=gen.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        _, h, w = self.latent_shape()
        size = (h * self.image_scale(), w * self.image_scale())
        ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=embeds.dtype, text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
        return {
            "encoder_hidden_states": embeds,
            "added_cond_kwargs": {"text_embeds": pooled.to(embeds.dtype), "time_ids": ids.to(gen.device).repeat(len(prompts), 1)},
        }


@contextmanager
def vae_upcast(gen):
    """The VAE in float32 for the block where its config says fp16 overflows (force_upcast, as
    SDXL's does), back in float16 after, as the pipelines run it."""
    torch, vae = gen.torch, gen.pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(dtype=torch.float16)


def torch_cat(gen, parts):
    return gen.torch.cat(parts)


def family_of(gen) -> Family:
    """The family of a loaded pipeline: text-to-image when it has a text encoder."""
    return (TextFamily if getattr(gen.pipe, "text_encoder", None) is not None else PixelFamily)(gen)


__all__: list[Any] = ["Family", "PixelFamily", "TextFamily", "family_of", "to_uint8"]
