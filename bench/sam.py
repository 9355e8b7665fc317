"""What the `sam` stage costs on this machine, with random-weight SAMs (no weights can be fetched
here): the image encoder's seconds per image, masks per second in `auto` and `prompted` modes,
and peak memory, for a small SAM at the released input size (1024) and, for the encoder, the
released vit_b shape; then what that implies for vit_h from its published per-image cost.

Each configuration runs in its own process, so its peak RSS is its own. Images are 32 px
shapes-world scenes, upsampled to 1024 as the stage does.

    python bench/sam.py [--images 2] [--points-per-side 16] [--no-vit-b]

Last line, for scripts:
`sam small: encoder <s> s/img, auto <r> masks/s, prompted <r> masks/s, peak <gb> GB; vit_b encoder <s> s/img`
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

SMALL = dict(embed_dim=128, depth=4, num_heads=4, global_attn_indexes=[3], prompt_dim=256)
# Published: SAM's ViT-H image encoder ~0.15 s per image on an A100; the prompt encoder and mask
# decoder ~50 ms per prompt in a browser on CPU (Kirillov et al., 2023). Parameters are counted here.


def run_one(config: str, images: int, side: int = 16) -> dict:
    import numpy as np
    import torch

    from synth.batch import Batch
    from synth.plugins import load_registry
    from synth.protocols import RunContext
    from synth_sam import RELEASED, SamArchitecture, build_segment_anything
    from synth_sam import SamStageConfig
    from synth_sam import SamStage
    from synth_shapes import render_many

    import tempfile

    arch = RELEASED["vit_b"] if config == "vit_b" else SamArchitecture(**SMALL)
    torch.manual_seed(0)
    model = build_segment_anything(arch)
    params = sum(p.numel() for p in model.image_encoder.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "sam.pth"
        torch.save(model.state_dict(), ckpt)
        del model
        options = {"checkpoint": str(ckpt), "architecture": arch.model_dump(), "device": "cpu", "encoder_batch_size": 4}
        ctx = RunContext(seed=0, manifest_dir=Path("."), classes=["background", "circle", "square", "triangle"], registry=load_registry())
        imgs, _ = render_many(0, range(images), 32, split="test")
        out = {"config": config, "encoder_params_m": params / 1e6}

        def stage_for(**more):
            st = SamStage(SamStageConfig.model_validate({**options, **more}), ctx)
            st.setup()
            return st

        st = stage_for(mode="prompted", prompts=[{"box": [2, 2, 20, 20]}])
        x = __import__("synth_sam.transform", fromlist=["to_input"]).to_input(imgs, arch.image_size, torch)
        st.backend.embed(x[:1])  # warm-up
        t0 = time.perf_counter()
        emb = torch.cat([st.backend.embed(x[s : s + 4]) for s in range(0, len(x), 4)])
        out["encoder_s_per_image"] = (time.perf_counter() - t0) / len(x)
        if config != "vit_b":
            # decoding only (embeddings reused): auto's grid and prompted boxes
            st.config.points_per_side, st.config.pred_iou_thresh, st.config.stability_score_thresh = side, 0.0, 0.0
            t0 = time.perf_counter()
            n_masks = 0
            for i in range(len(x)):
                found = st._auto(emb[i : i + 1], Batch(keys=["k"], images=imgs[i : i + 1], records=[{}]), 0, 32, 32)
                n_masks += side * side * 3  # every grid point decodes three masks before filtering
            out["auto_masks_per_s"] = n_masks / (time.perf_counter() - t0)
            out["auto_instances_per_image"] = len(found)
            boxes = [(None, None, np.array([x0, y0, x0 + 10, y0 + 10], np.float32)) for x0 in range(0, 20, 2) for y0 in range(0, 20, 4)]
            t0 = time.perf_counter()
            for i in range(len(x)):
                st._decode(emb[i : i + 1], boxes, 32, 32, False)
            out["prompted_masks_per_s"] = len(boxes) * len(x) / (time.perf_counter() - t0)
        out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--points-per-side", type=int, default=16, help="auto mode's grid (SAM's default is 32: four times the masks)")
    ap.add_argument("--no-vit-b", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one, args.images, args.points_per_side)
        return
    import torch

    print(f"sam stage, {os.cpu_count()} cores, torch {torch.__version__} threads {torch.get_num_threads()}, random weights, 32 px images upsampled to 1024")
    results = {}
    for config in ["small"] + ([] if args.no_vit_b else ["vit_b"]):
        n = args.images
        res = subprocess.run([sys.executable, __file__, "--one", config, "--images", str(n), "--points-per-side", str(args.points_per_side)], capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"{config} failed: {res.stderr.strip().splitlines()[-1]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        results[config] = r
        line = f"  {config}: encoder {r['encoder_params_m']:.1f} M params, {r['encoder_s_per_image']:.2f} s/image"
        if "auto_masks_per_s" in r:
            line += f"; auto {r['auto_masks_per_s']:.0f} masks/s ({args.points_per_side}x{args.points_per_side} grid, 3 masks per point); prompted {r['prompted_masks_per_s']:.0f} masks/s (boxes)"
        print(line + f"; peak RSS {r['peak_gb']:.2f} GB", flush=True)
    small = results["small"]
    vit_b = results.get("vit_b")
    vit_h_params = 637.0  # ViT-H image encoder, millions of parameters (counted with build_segment_anything)
    if vit_b:
        est = vit_b["encoder_s_per_image"] * vit_h_params / vit_b["encoder_params_m"]
        print(f"  vit_h on this CPU, scaled by encoder parameters from vit_b (same 64x64 tokens): ~{est:.0f} s/image; "
              f"published: ~0.15 s/image on an A100. The decoder's cost does not depend on the encoder: "
              f"auto at SAM's default 32 points per side is {32 * 32 * 3} masks per image, {32 * 32 * 3 / small['auto_masks_per_s']:.0f} s here.")
    tail = f"vit_b encoder {vit_b['encoder_s_per_image']:.1f} s/img" if vit_b else "vit_b not run"
    print(
        f"sam small: encoder {small['encoder_s_per_image']:.2f} s/img, auto {small['auto_masks_per_s']:.0f} masks/s, "
        f"prompted {small['prompted_masks_per_s']:.0f} masks/s, peak {small['peak_gb']:.2f} GB; {tail}"
    )


if __name__ == "__main__":
    main()
