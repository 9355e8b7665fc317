"""The diffusers generator's manifest table."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synth.protocols import PluginConfig
from synth.refs import ClassifierRef

SCHEDULERS = {
    "default": None,
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


class FeedbackConfig(PluginConfig):
    """Guidance toward what a downstream classifier gets wrong."""

    classifier: ClassifierRef = Field(description='The downstream classifier, e.g. {name = "torch", path = "models/my-classifier"}; it must give gradients')
    weight: float = Field(0.0, ge=0.0, le=10.0, description="How far each guided step moves the clean-image estimate, in pixels of range [-1, 1] (0: off; 0.05 is gentle)")
    objective: Literal["entropy", "loss"] = Field(
        "entropy", description="entropy: toward images the classifier is unsure of; loss: toward misclassifying the sample's own class"
    )
    until: float = Field(1.0, gt=0.0, le=1.0, description="Guide the first this share of the sampler's steps (the rest refine the image)")


class LoraWeights(PluginConfig):
    path: str = Field(description="A local LoRA .safetensors file (relative to the manifest)")
    scale: float = Field(1.0, ge=-4.0, le=4.0, description="How strongly the LoRA applies")


class TextualInversion(PluginConfig):
    path: str = Field(description="A local textual-inversion .safetensors / .bin file (relative to the manifest)")
    token: str | None = Field(None, description="The token the prompts use for it (default: the file's own)")


class DiffusersConfig(PluginConfig):
    added_later = frozenset(
        {"tags", "safety_checker", "feedback", "prompt_2", "negative_prompt_2", "guidance_rescale", "karras_sigmas", "timestep_spacing",
         "zero_snr", "offload", "vae_slicing", "vae_tiling", "attention_slicing", "compile", "variant", "lora", "textual_inversion", "refiner", "refiner_start"}
    )

    model: str = Field(description="Local pipeline folder, hub id (org/name) or builtin:NAME")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit)")
    scheduler: Literal[tuple(SCHEDULERS)] = Field("ddim", description="Sampler; 'default' keeps the pipeline's own")
    steps: int = Field(50, ge=1, le=1000, description="Denoising steps")
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM eta (0 = deterministic given the latent)")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto: cuda when present, else cpu")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="auto: float16 on cuda, else float32")
    use_safetensors: bool | None = Field(None, description="None: prefer safetensors, accept .bin (loaded weights_only)")
    # Text-to-image conditions (Stable Diffusion family). Exactly one source of prompts.
    prompts: list[str] | None = Field(None, description="Prompts, used in turn: sample i gets prompts[i % n]")
    prompts_file: str | None = Field(None, description="A text file, one prompt per line (relative to the manifest)")
    templates: list[str] | dict[str, list[str]] | None = Field(
        None,
        description="Templates over [dataset].classes, e.g. 'a photo of a {cls}' (set each sample's class); or per class, "
        "{ cat = ['a tabby on a sofa'], '*' = ['a photo of a {cls}'] } ('*': every class not named)",
    )
    negative_prompt: str | dict[str, str] | None = Field(None, description="What to steer away from; or per class, with '*' for the others")
    prompt_2: str | None = Field(None, description="SDXL's second text encoder: this text for every sample (a style, say); default: the sample's prompt")
    negative_prompt_2: str | None = Field(None, description="SDXL's second text encoder's negative prompt; default: negative_prompt")
    refiner: str | None = Field(None, description="SDXL's refiner (hub id or local folder): it takes the base's latents for the last steps")
    refiner_start: float = Field(0.8, gt=0.0, lt=1.0, description="The share of the steps the base model takes before the refiner (SDXL's 'ensemble of experts')")
    # Tag-conditioned pixel models (`synth fit` with [fit] tags = true)
    tags: list[list[str]] | None = Field(
        None,
        description="Tag sets of a tag-conditioned model, used in turn: sample i gets tags[i % n] (default: each "
        "sample's tags drawn from the model's training tag sets by (seed, index))",
    )
    safety_checker: Literal["drop", "keep", "off"] = Field(
        "drop",
        description="A pipeline's safety checker (Stable Diffusion's): drop flagged samples with the reason; keep them "
        "(blacked out by the checker, condition.nsfw_flagged = true); or off (not run)",
    )
    guidance_scale: float = Field(7.5, ge=0.0, le=50.0)
    guidance_rescale: float = Field(
        0.0, ge=0.0, le=1.0, description="Rescale the guided prediction toward the conditional one's spread (Lin et al.; 0.7 with zero_snr): fixes over-exposure at high guidance"
    )
    # the sampler's schedule
    karras_sigmas: bool = Field(False, description="Karras noise levels (euler, dpm++): more steps at low noise")
    timestep_spacing: Literal["default", "leading", "trailing", "linspace"] = Field(
        "default", description="How the sampler's steps are spread over the training schedule; 'trailing' starts at the noisiest step (needed with zero_snr)"
    )
    zero_snr: bool = Field(False, description="Rescale betas to zero terminal SNR (for v-prediction models trained so, e.g. SD 2.1 fine-tunes); sets trailing spacing")
    # memory and speed (CUDA)
    offload: Literal["model", "sequential"] | None = Field(
        None, description="Keep weights on the CPU and move them to the GPU when used: 'model' per component (a little slower), 'sequential' per layer (least memory, slow)"
    )
    vae_slicing: bool = Field(False, description="Decode a batch's images one at a time (less peak memory, same pixels)")
    vae_tiling: bool = Field(False, description="Encode and decode in overlapping tiles (large images in little memory; pixels differ slightly at tile seams)")
    attention_slicing: bool = Field(False, description="Compute attention in slices (less memory, slower; same results up to rounding)")
    compile: bool = Field(False, description="torch.compile the UNet (faster after a first slow call; needs torch >= 2 with a compiler)")
    variant: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="Weight variant to load, e.g. 'fp16' (files named *.fp16.safetensors)")
    lora: list[LoraWeights] = Field(default_factory=list, description='LoRA weights from local files: [{path = "loras/style.safetensors", scale = 0.8}]')
    textual_inversion: list[TextualInversion] = Field(
        default_factory=list, description='Learned token embeddings from local files: [{path = "embeds/my-cat.safetensors", token = "<my-cat>"}]'
    )
    feedback: FeedbackConfig | None = Field(
        None, description="Guide sampling toward what a downstream classifier gets wrong (pixel models): {classifier = {...}, weight = 0.05}"
    )
    height: int | None = Field(None, ge=8, multiple_of=8)
    micro_batch: int | None = Field(
        None, ge=1, le=1024,
        description="The model always sees this many samples at once (a short group padded): its kernels' results "
        "depend on the call size, so a sample's pixels then never depend on its neighbours; default: from [run] batch_size "
        "(the size of at most 16 that pads least: 8 for 8, 10 for 50, 16 for 32), so no call but a run's last carries padding",
    )
    width: int | None = Field(None, ge=8, multiple_of=8)

    @model_validator(mode="after")
    def _pndm_steps(self):
        # PNDM's warm-up (Runge-Kutta) steps need at least 4; fewer fail inside diffusers
        if self.scheduler == "pndm" and self.steps < 4:
            raise ValueError(f"scheduler 'pndm' needs steps >= 4 (got {self.steps})")
        return self

    @model_validator(mode="after")
    def _one_prompt_source(self):
        given = [n for n in ("prompts", "prompts_file", "templates") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of prompts, prompts_file, templates (got {', '.join(given)})")
        if self.prompts is not None and not self.prompts:
            raise ValueError("prompts is empty")
        if self.tags is not None and (given or not self.tags):
            raise ValueError("tags is empty" if not self.tags else "tags condition a tag model; prompts and templates a text-to-image one")
        if isinstance(self.templates, list):
            if not self.templates:
                raise ValueError("templates is empty")
            for t in self.templates:
                if "{cls}" not in t:
                    raise ValueError(f"template {t!r} has no {{cls}} placeholder")
        elif isinstance(self.templates, dict):
            for name, ts in self.templates.items():
                if not ts:
                    raise ValueError(f"templates.{name} is empty")
        return self

    @model_validator(mode="after")
    def _feedback_without_refiner(self):
        # the refiner's steps run inside its own pipeline, which a guided step cannot reach
        if self.feedback is not None and self.feedback.weight > 0 and self.refiner is not None:
            raise ValueError("feedback guides the sampler's own steps; it cannot guide a refiner's (drop one of them)")
        return self

    @model_validator(mode="after")
    def _schedule(self):
        if self.zero_snr and self.timestep_spacing not in ("default", "trailing"):
            raise ValueError(f"zero_snr needs timestep_spacing 'trailing' (got {self.timestep_spacing!r}): the noisiest step must be sampled")
        return self

    def scheduler_options(self) -> dict:
        """What the manifest changes in the sampler's config."""
        out: dict = {}
        if self.karras_sigmas:
            out["use_karras_sigmas"] = True
        if self.zero_snr:
            out["rescale_betas_zero_snr"] = True
            out["timestep_spacing"] = "trailing"
        if self.timestep_spacing != "default":
            out["timestep_spacing"] = self.timestep_spacing
        return out

    def templates_for(self, name: str) -> list[str] | None:
        """The templates of class ``name`` (per-class templates fall back on '*')."""
        if isinstance(self.templates, dict):
            return self.templates.get(name, self.templates.get("*"))
        return self.templates

    def negative_for(self, name: str | None) -> str | None:
        if isinstance(self.negative_prompt, dict):
            return self.negative_prompt.get(name, self.negative_prompt.get("*")) if name is not None else self.negative_prompt.get("*")
        return self.negative_prompt

    def check_classes(self, classes: list[str]) -> list[str]:
        if self.templates is not None and not classes:
            return ["templates need class names in [dataset].classes"]
        problems = []
        for field in ("templates", "negative_prompt"):
            table = getattr(self, field)
            if isinstance(table, dict):
                unknown = [k for k in table if k != "*" and k not in classes]
                if unknown:
                    problems.append(f"{field}.{unknown[0]}: no such class in [dataset].classes {list(classes)}")
        if isinstance(self.templates, dict) and "*" not in self.templates:
            missing = [c for c in classes if c not in self.templates]
            if missing:
                problems.append(f"templates: no template for class {missing[0]!r}; give it its own or a '*' entry")
        return problems


class InvertOptions(PluginConfig):
    """What a stage may ask of the generator's ``invert`` (the invert and direction operators,
    discover): validated here, so a wrong option is named, whoever passes it."""

    method: Literal["fixed_point", "ddim"] = "ddim"
    steps: int | None = Field(None, ge=1, le=1000, description="Inversion steps (default: the generator's sampling steps)")
    iterations: int = Field(2, ge=1, le=10, description="fixed_point: extra UNet calls per step")


class FeatureOptions(PluginConfig):
    """What a stage may ask of the generator's per-pixel features (pixelhead, the generator
    extractor): which blocks, at which timesteps, read how."""

    blocks: list[str] | None = Field(None, description="UNet blocks (default: mid and every up block)")
    timesteps: list[int] | None = Field(None, description="Training-schedule timesteps (default: 50, 150, 250)")
    noise_seed: int | None = None
    source: Literal["noised", "inverted", "trajectory"] | None = None
    inversion_steps: int | None = Field(None, ge=1, le=1000)
