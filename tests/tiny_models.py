"""Tiny random-weight diffusers pipelines, built and saved locally (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path


def build_ddpm(path: Path, size: int = 16, num_class_embeds: int | None = None, seed: int = 0) -> Path:
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        num_class_embeds=num_class_embeds,
    )
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100))
    pipe.save_pretrained(path)
    (path / "README.md").write_text("---\nlicense: mit\n---\n# tiny test model\n")
    return path


def _write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over a tiny vocabulary: every letter, plus end-of-word forms."""
    from transformers import CLIPTokenizer

    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for tok in letters + [c + "</w>" for c in letters] + list(".,!?'") + [c + "</w>" for c in ".,!?'"]:
        vocab.setdefault(tok, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    tok.save_pretrained(folder)
    return tok


def _tiny_vae(**options):
    """A two-level VAE (16 px images <-> 8 px latents with 4 channels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        **options,
    )


def build_stable_diffusion(path: Path, seed: int = 0) -> Path:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = _write_tokenizer(path.parent / f"{path.name}-tokenizer-src")
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = _tiny_vae()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def build_sdxl(path: Path, seed: int = 0, upcast_vae: bool = True, refiner: Path | None = None) -> Path:
    """A tiny random Stable Diffusion XL: two text encoders (the second with a projection, whose
    pooled output and the size / crop time ids are the UNet's added conditions)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tok = _write_tokenizer(path.parent / f"{path.name}-tokenizer-src")
    text = dict(vocab_size=len(tok), intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    text_1 = CLIPTextModel(CLIPTextConfig(hidden_size=8, **text))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=16, projection_dim=16, **text))
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + 16,
        norm_num_groups=4,
    )
    vae = _tiny_vae(scaling_factor=0.13025, force_upcast=upcast_vae)
    sched = EulerDiscreteScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_1, text_encoder_2=text_2, tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=sched)
    pipe.save_pretrained(path)
    if refiner is not None:  # SDXL's refiner: the second encoder only, and an aesthetic score among its added ids
        unet = UNet2DConditionModel(**{**unet.config, "cross_attention_dim": 16, "projection_class_embeddings_input_dim": 5 * 4 + 16})
        StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=None, text_encoder_2=text_2, tokenizer=None, tokenizer_2=tok, unet=unet, scheduler=sched,
            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        ).save_pretrained(refiner)
    return path


def build_clip(path: Path, seed: int = 0) -> Path:
    """A tiny random CLIP (32 px images, 8 px patches) with the letter tokenizer, saved locally."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    tok = _write_tokenizer(path)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(path)
    return path


def build_classifier(path: Path, labels: tuple[str, ...] = ("circle", "Square", "tri", "dog"), seed: int = 0) -> Path:
    """A tiny random ViT image classifier (32 px) with its image processor, saved locally."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_dinov2(path: Path, seed: int = 0) -> Path:
    """A tiny random DINOv2 (32 px images, 8 px patches), saved locally."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(path)
    return path


TINY_SAM = dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=[1], image_size=128, patch_size=16, window_size=4, prompt_dim=32, decoder_mlp_dim=64, decoder_heads=2, iou_head_hidden_dim=32)


def build_sam(folder: Path, seed: int = 0) -> dict:
    """A tiny random SAM, saved both ways: a segment-anything checkpoint (tiny.pth) and the same
    weights under transformers' names (a SamModel folder, hf/)."""
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    from synth_sam.architecture import SamArchitecture, build_segment_anything, transformers_config
    from synth_sam.convert import segment_anything_to_transformers
    from transformers import SamModel

    torch.manual_seed(seed)
    arch = SamArchitecture(**TINY_SAM)
    sam = build_segment_anything(arch)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), folder / "tiny.pth")
    hf = SamModel(transformers_config(arch))
    missing, unexpected = hf.load_state_dict(segment_anything_to_transformers(sam.state_dict()), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    hf.save_pretrained(folder / "hf")
    return {"checkpoint": folder / "tiny.pth", "hf": folder / "hf", "arch": TINY_SAM}


def build_tag_model(path: Path, size: int = 16, tags: tuple[str, ...] = ("circle", "square", "triangle"), seed: int = 0) -> Path:
    """A tiny random tag-conditioned pixel model, laid out as `synth fit` with [fit] tags writes
    it: a UNet2DConditionModel cross-attending to the tag tokens, and tags/ with the tokens and
    the training tag sets generation draws from."""
    import sys

    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DConditionModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    from synth_diffusers.tags import TagVocabulary, make_encoder, save

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(path)
    sets = [[t] for t in tags] + [list(tags[:2])]
    vocabulary = TagVocabulary.from_training(sets, ["background", *tags])
    save(path, vocabulary, make_encoder(vocabulary.slots, 8))
    (path / "README.md").write_text("---\nlicense: mit\n---\n# tiny tag test model\n")
    return path
