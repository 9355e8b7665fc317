"""The [fit] table of a manifest: how `synth fit` trains a UNet2DModel on a source's images."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from synth.protocols import PluginConfig
from synth.threads import ThreadsSetting


class FitWatchConfig(PluginConfig):
    """[fit].watch: measure the samples while fitting (fit_watch.py)."""

    extractor: str | dict = Field(description='A feature extractor table: "shapes", or e.g. {name = "dinov2", model = "facebook/dinov2-small"}')
    samples: int = Field(256, ge=16, le=4096, description="Samples drawn from the EMA weights, and training images compared with them, at each watch")
    steps: int = Field(20, ge=1, le=1000, description="DDIM steps per sample")
    every: int | None = Field(None, ge=1, description="Steps between watches (default: checkpoint_every)")
    min_gain: float = Field(0.02, ge=0, description="A watch improves when precision + recall beats by this much its level at the last watch that improved")
    patience: int = Field(3, ge=1, description="Say so after this many watches in a row without a gain of min_gain")


# Fields added after models were shipped: left out of the recipe hash while tags is off, so the
# shipped models' recorded recipes still match their manifests.
TAG_FIELDS = ("tags", "cross_attention_dim", "attention_heads", "tag_dropout", "init_shared")


class FitConfig(PluginConfig):
    output: str = Field(description="Folder for the trained pipeline, checkpoints and progress images")
    # Architecture (a diffusers UNet2DModel)
    block_out_channels: list[int] = Field([32, 64, 64], min_length=1, max_length=6)
    layers_per_block: int = Field(1, ge=1, le=4)
    attention_levels: list[int] = Field([2], description="Resolution levels (0 = full) with self-attention")
    norm_num_groups: int = Field(8, ge=1)
    class_conditional: bool | Literal["auto"] = Field("auto", description="auto: when the source gives class labels")
    tags: bool = Field(
        False,
        description="Condition on each image's tags (its record's 'tags', e.g. the kinds of shape a scene shows): a "
        "UNet2DConditionModel cross-attends, at attention_levels, to one learned token per tag plus a null token, "
        "so each tag's attention says where it is (the attention labeller)",
    )
    init_shared: bool = Field(
        False,
        description="With init_from: take only the weights whose names and shapes match (e.g. an unconditional model's "
        "convolutions for a tag model); the rest start fresh. Default: the architectures must match exactly",
    )
    cross_attention_dim: int = Field(64, ge=8, le=2048, description="Width of the tag tokens (tags = true)")
    attention_heads: int = Field(4, ge=1, le=64, description="Heads of each attention layer (tags = true)")
    tag_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Share of training images whose tags are all dropped (the null condition of classifier-free guidance; tags = true)")
    tagged_share: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="With tags, when few images are tagged (a folder's untagged = \"unlabelled\"): this share of each batch is "
        "drawn from the tagged images, the rest from all, so a few labelled images per class teach their tokens; "
        "default: every image equally often",
    )
    init_from: str | None = Field(
        None,
        description="Start from this pipeline's UNet weights (folder, relative to the manifest, or builtin:NAME); "
        "the architecture fields must match it",
    )
    # Noise schedule
    num_train_timesteps: int = Field(1000, ge=10, le=4000)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    # Defaults from bench/fit_curve.py (README): v-prediction with Min-SNR weighting was never
    # behind uniform epsilon (the old recipe) on shape fidelity by more than the noise over two
    # seeds and 75 CPU minutes, and ahead at the end of one; at lr 1e-3 it is ahead of epsilon at
    # the same lr from 15 minutes on.
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    loss_weighting: Literal["uniform", "min_snr"] = Field("min_snr", description="min_snr: Min-SNR-gamma weighting (Hang et al. 2023); uniform: plain MSE")
    snr_gamma: float = Field(5.0, gt=0, description="gamma of min_snr")
    timestep_sampling: Literal["uniform", "logsnr"] = Field("uniform", description="logsnr: log-SNR ~ N(logsnr_mean, logsnr_std), concentrating on mid noise")
    logsnr_mean: float = Field(0.0, description="Mean of the log-SNR normal (timestep_sampling = logsnr)")
    logsnr_std: float = Field(2.0, gt=0, description="Std of the log-SNR normal")
    # Optimisation
    steps: int = Field(10000, ge=1)
    batch_size: int = Field(32, ge=1)
    # 2e-3 (3e-4, then 1e-3 before): at batch 32 on the shapes world it was ahead of 1e-3 at every
    # point of two fit curves and reached the old recipe's 75-minute fidelity in about a third of
    # the compute; on the cells world its 30-minute fit had a third lower FID than 1e-3's, with
    # precision and recall within noise; 3e-3 was behind it (README, "The learning rate").
    # Manifests that fit larger UNets at large batch on a GPU set their own.
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (AdamW), reached after warmup_steps")
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = Field(200, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1, description="0 disables EMA")
    ema_warmup: bool = Field(True, description="Decay min(ema_decay, (1 + step) / (10 + step)): early averages forget the random start")
    hflip: bool = Field(True, description="Random horizontal flips")
    # Execution
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field("auto", description="auto: bf16 on cuda, else no; bf16 also runs on CPUs (autocast)")
    channels_last: bool = Field(False, description="Channels-last memory format (faster convolutions on some CPUs and GPUs)")
    max_minutes: float | None = Field(None, gt=0, description="Stop (and save) after this much training time")
    threads: ThreadsSetting = Field(
        None, description="torch threads: a count, or \"auto\" for the cores minus the machine's load now; default: OMP_NUM_THREADS, else the cores (see synth.threads)"
    )
    read_processes: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Processes that read the training images (the source and transforms); auto: up to 8 "
        "(one per core) from 10,000 images, else 1. The images are the same for any count",
    )
    # Checkpoints and progress
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    grid_samples: int = Field(64, ge=1, le=256)
    grid_steps: int = Field(25, ge=1, le=1000, description="DDIM steps for the sample grid")
    watch: FitWatchConfig | None = Field(None, description="Measure the samples against the training images through a feature extractor as the fit goes")
    license: str = Field("apache-2.0", description="Licence written into the model card")
    save_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32",
        description="Precision of the saved pipeline's weights (fp16: half the bytes, for shipping); "
        "training and checkpoints stay fp32, and the generator loads any of them in the dtype it runs",
    )

    @model_validator(mode="after")
    def _combinations(self):
        if self.mixed_precision == "fp16" and self.device == "cpu":
            raise ValueError("mixed_precision fp16 needs a GPU (use bf16 on CPUs)")
        return self

    @model_validator(mode="after")
    def _arch(self):
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(f"block_out_channels {c} is not a multiple of norm_num_groups {self.norm_num_groups}")
        for lvl in self.attention_levels:
            if not 0 <= lvl < len(self.block_out_channels):
                raise ValueError(f"attention level {lvl} outside 0..{len(self.block_out_channels) - 1}")
        if self.tagged_share is not None and not self.tags:
            raise ValueError("tagged_share draws tagged images more often; it needs tags = true")
        if self.tags:
            if not self.attention_levels:
                raise ValueError("tags need at least one attention level (the tag tokens are read by cross-attention there)")
            if self.class_conditional is True:
                raise ValueError("give tags or class_conditional, not both")
            for c in self.block_out_channels:
                if c % self.attention_heads:
                    raise ValueError(f"block_out_channels {c} is not a multiple of attention_heads {self.attention_heads}")
        return self
