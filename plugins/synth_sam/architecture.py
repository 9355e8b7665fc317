"""SAM's shapes: the three released image encoders, or any other (a distilled or a tiny test
model) spelled out, and the transformers config that matches one."""

from __future__ import annotations

from pydantic import Field

from synth.protocols import PluginConfig


class SamArchitecture(PluginConfig):
    embed_dim: int = Field(description="Image encoder width (768 vit_b, 1024 vit_l, 1280 vit_h)", ge=8)
    depth: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    global_attn_indexes: list[int]
    image_size: int = Field(1024, ge=16, description="Encoder input side; samples are resized to it")
    patch_size: int = Field(16, ge=1)
    window_size: int = Field(14, ge=1)
    prompt_dim: int = Field(256, ge=8, description="Prompt / mask-decoder width (a multiple of 8)")
    decoder_depth: int = Field(2, ge=1)
    decoder_mlp_dim: int = Field(2048, ge=1)
    decoder_heads: int = Field(8, ge=1)
    iou_head_hidden_dim: int = Field(256, ge=1)
    mask_in_chans: int = Field(16, ge=1)


RELEASED = {
    "vit_b": SamArchitecture(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=[2, 5, 8, 11]),
    "vit_l": SamArchitecture(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=[5, 11, 17, 23]),
    "vit_h": SamArchitecture(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=[7, 15, 23, 31]),
}


def guess_released(embed_dim: int) -> str | None:
    return next((name for name, a in RELEASED.items() if a.embed_dim == embed_dim), None)


def build_segment_anything(arch: SamArchitecture):
    """A randomly initialised segment_anything.modeling.Sam of this shape (weights load next)."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth,
            embed_dim=arch.embed_dim,
            img_size=arch.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes,
            window_size=arch.window_size,
            out_chans=arch.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=arch.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=arch.decoder_depth, embedding_dim=arch.prompt_dim, mlp_dim=arch.decoder_mlp_dim, num_heads=arch.decoder_heads),
            transformer_dim=arch.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
    )


def transformers_config(arch: SamArchitecture):
    """transformers.SamConfig for the same shape (to load a converted segment-anything state dict)."""
    from transformers import SamConfig

    return SamConfig(
        vision_config=dict(
            hidden_size=arch.embed_dim,
            output_channels=arch.prompt_dim,
            num_hidden_layers=arch.depth,
            num_attention_heads=arch.num_heads,
            image_size=arch.image_size,
            patch_size=arch.patch_size,
            global_attn_indexes=list(arch.global_attn_indexes),
            window_size=arch.window_size,
            mlp_ratio=4.0,
            num_pos_feats=arch.prompt_dim // 2,
        ),
        prompt_encoder_config=dict(hidden_size=arch.prompt_dim, image_size=arch.image_size, patch_size=arch.patch_size, mask_input_channels=arch.mask_in_chans),
        mask_decoder_config=dict(
            hidden_size=arch.prompt_dim,
            mlp_dim=arch.decoder_mlp_dim,
            num_hidden_layers=arch.decoder_depth,
            num_attention_heads=arch.decoder_heads,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
            iou_head_depth=3,
        ),
    )
