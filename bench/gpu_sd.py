"""What Stable Diffusion work costs through synth on a GPU: real-size SD 1.5 and SDXL
architectures and SAM vit_h, with random weights (none can be downloaded here; throughput and
memory do not depend on the weights' values).

For each model and batch size: images/s and the peak GPU memory of
- generate: the diffusers generator's decode (20 dpm++ steps, guidance 7.5, fp16) at 512 px for
  SD 1.5 and 1024 px for SDXL, through synth's own generator (set up on the random pipeline,
  `setup(pipeline=...)`);
- pixel head features: the generator's per-pixel features of 512 px images (SD 1.5: the
  default decoder blocks at three noise levels), what the pixelhead stage pays per image;
- SAM vit_h's image encoder at 1024 px (fp32, as the sam stage runs it by default).

    python bench/gpu_sd.py [--batch-sizes 1,8] [--tiny] [--only sd15,sdxl,sam]

--tiny runs the same code on tiny architectures (a CPU check of the script). Last line:
`sd15 512px b<b>: <r> img/s, <g> GiB; sdxl 1024px b<b>: <r> img/s, <g> GiB; features 512px b<b>: <r> img/s, <g> GiB; sam vit_h b<b>: <r> img/s, <g> GiB`
(at the largest batch size).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT))


def tokenizer(folder: Path, max_length: int = 77):
    """A CLIP tokenizer over single characters (the real BPE vocabulary cannot be fetched); only
    the token count matters here, and prompts are cut to max_length as usual."""
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(" .,!?'")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for tok in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(tok, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def vae(tiny: bool, scaling: float = 0.18215):
    from diffusers import AutoencoderKL

    ch = (8, 16, 16, 16) if tiny else (128, 256, 512, 512)
    return AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=ch, layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=4 if tiny else 32, sample_size=64 if tiny else 512, scaling_factor=scaling,
    )


def clip(tiny: bool, hidden: int, layers: int, heads: int, inner: int, projection: int | None = None, act: str = "quick_gelu"):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if tiny:
        hidden, layers, heads, inner = max(8, hidden // 64), 2, 2, 32
        projection = projection and hidden
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=inner, num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77, hidden_act=act, projection_dim=projection or hidden)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def sd15(tiny: bool, tmp: Path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8 if tiny else 64, in_channels=4, out_channels=4,
        block_out_channels=(8, 16, 16, 16) if tiny else (320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=12 if tiny else 768, attention_head_dim=2 if tiny else 8, norm_num_groups=4 if tiny else 32,
    )
    return StableDiffusionPipeline(
        vae=vae(tiny), text_encoder=clip(tiny, 768, 12, 12, 3072), tokenizer=tokenizer(tmp / "tok"), unet=unet,
        scheduler=scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def sdxl(tiny: bool, tmp: Path):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    text_2 = clip(tiny, 1280, 32, 20, 5120, projection=1280, act="gelu")
    text_1 = clip(tiny, 768, 12, 12, 3072)
    unet = UNet2DConditionModel(
        sample_size=8 if tiny else 128, in_channels=4, out_channels=4,
        block_out_channels=(8, 16, 16) if tiny else (320, 640, 1280), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 1) if tiny else (1, 2, 10), attention_head_dim=(2, 2, 2) if tiny else (5, 10, 20),
        cross_attention_dim=text_1.config.hidden_size + text_2.config.hidden_size, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8 if tiny else 256,
        projection_class_embeddings_input_dim=(8 * 6 if tiny else 256 * 6) + text_2.config.projection_dim,
        norm_num_groups=4 if tiny else 32,
    )
    tok = tokenizer(tmp / "tok")
    return StableDiffusionXLPipeline(vae=vae(tiny, 0.13025), text_encoder=text_1, text_encoder_2=text_2, tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=scheduler())


def generator_for(pipe, size: int, batch: int, device: str):
    """synth's diffusers generator (from the plugin registry), set up on ``pipe``."""
    from synth.plugins import load_registry
    from synth.protocols import RunContext

    registry = load_registry()
    cls = registry.generator("diffusers", "bench")
    cfg = cls.Config(
        model="random-weights", scheduler="dpm++", steps=20, guidance_scale=7.5, height=size, width=size,
        prompts=["a photo of a red car on a street"], micro_batch=batch, device=device, dtype="float16" if device == "cuda" else "float32",
    )
    gen = cls(cfg, RunContext(seed=0, manifest_dir=Path("."), classes=[], registry=registry, quiet=True))
    gen.setup(pipeline=pipe)
    return gen


def timed(torch, fn, repeat: int) -> tuple[float, float]:
    """(seconds per call after one warm-up call, peak GiB allocated)."""
    cuda = torch.cuda.is_available()
    fn()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return (time.perf_counter() - t0) / repeat, peak


def bench_generate(name: str, build, size: int, sizes: list[int], tiny: bool, device: str, features: bool) -> list[dict]:
    import numpy as np
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with torch.device(device):  # random init on the GPU: seconds, not minutes
            pipe = build(tiny, Path(tmp))
        for b in sizes:
            gen = generator_for(pipe, size, b, device)
            idx = list(range(b))
            z = gen.sample_latents(idx, 0)
            conds = [gen.condition(i) for i in idx]
            sec, peak = timed(torch, lambda g=gen: g.decode(z, conds, idx, 0), 1)
            rows.append({"model": name, "what": "generate", "px": size, "batch": b, "img_per_s": round(b / sec, 3), "peak_gib": round(peak, 2)})
            print(json.dumps(rows[-1]), flush=True)
            if features:
                images = np.zeros((b, size, size, 3), np.uint8) + 127
                spec = gen.feature_spec({})
                sec, peak = timed(torch, lambda g=gen: g.features(images, conds, spec), 1)
                rows.append({"model": name, "what": "features", "px": size, "batch": b, "img_per_s": round(b / sec, 3), "peak_gib": round(peak, 2), "blocks": list(spec.blocks), "timesteps": list(spec.timesteps)})
                print(json.dumps(rows[-1]), flush=True)
            del gen
        del pipe
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_sam(sizes: list[int], tiny: bool, device: str) -> list[dict]:
    import torch

    from synth_sam import RELEASED, SamArchitecture, build_segment_anything

    arch = SamArchitecture(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=[1], prompt_dim=32) if tiny else RELEASED["vit_h"]
    with torch.device(device):
        model = build_segment_anything(arch).eval()
    rows = []
    for b in sizes:
        x = torch.randn(b, 3, 1024, 1024, device=device)
        with torch.inference_mode():
            sec, peak = timed(torch, lambda: model.image_encoder(x), 2)
        rows.append({"model": "sam vit_h" if not tiny else "sam tiny", "what": "encoder", "px": 1024, "batch": b, "img_per_s": round(b / sec, 3), "peak_gib": round(peak, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--tiny", action="store_true", help="tiny architectures: a CPU check of this script")
    ap.add_argument("--only", default="sd15,sdxl,sam")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    only = set(args.only.split(","))
    rows = []
    if "sd15" in only:
        rows += bench_generate("sd15", sd15, 64 if args.tiny else 512, sizes, args.tiny, device, features=True)
    if "sdxl" in only:
        rows += bench_generate("sdxl", sdxl, 64 if args.tiny else 1024, sizes, args.tiny, device, features=False)
    if "sam" in only:
        rows += bench_sam(sizes, args.tiny, device)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    top = max(sizes)
    pick = {(r["model"], r["what"]): r for r in rows if r["batch"] == top}
    parts = []
    for key, label in ((("sd15", "generate"), "sd15 {px}px"), (("sdxl", "generate"), "sdxl {px}px"), (("sd15", "features"), "features {px}px"), (("sam vit_h", "encoder"), "sam vit_h"), (("sam tiny", "encoder"), "sam tiny")):
        r = pick.get(key)
        if r:
            parts.append(f"{label.format(px=r['px'])} b{top}: {r['img_per_s']} img/s, {r['peak_gib']} GiB")
    print("; ".join(parts))


if __name__ == "__main__":
    main()
