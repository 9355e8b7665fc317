"""Peak memory of training the pixel head, against materialising every pixel's features.

DatasetGAN and ddpm-segmentation build one (N, C, H, W) array of every labelled pixel's features
(128-210 GB of RAM in their READMEs). Here: 16 labelled images at 256x256 and a synthetic
4,096-channel feature pyramid (32x32 x 1280, 64x64 x 1280, 128x128 x 1024, 256x256 x 512, the
shape of a large UNet decoder), trained with synth's bounded pixel bank. The features are a
fixed random function of the label map plus noise, so the head has something to learn and its
accuracy on an unseen image is printed too.

It prints our peak RSS next to a materialise-everything implementation: that one is measured on
1 image in a subprocess (features upsampled to full resolution and stacked, float32) and
scaled to 16, and computed from the array sizes.

    python bench/pixelhead_memory.py [--images 16] [--size 256] [--ensemble 3] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

LEVELS = [(32, 1280), (64, 1280), (128, 1024), (256, 512)]  # (side at 256x256 input, channels)
CLASSES = 5


def masks(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Label maps with a few discs and boxes of 4 foreground classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, size, size), np.int64)
    for i in range(n):
        for _ in range(6):
            cls = int(rng.integers(1, CLASSES))
            cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 16, size // 5))]
            if rng.random() < 0.5:
                out[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
            else:
                out[i][(abs(yy - cy) < r) & (abs(xx - cx) < r)] = cls
    return out


class SyntheticFeatures:
    """A stand-in generator: features(images) -> pyramid, a random projection of the labels."""

    def __init__(self, size: int, seed: int = 0):
        import torch

        self.torch = torch
        self.size = size
        g = torch.Generator().manual_seed(seed)
        self.proj = [torch.randn(c, CLASSES, generator=g) for _, c in LEVELS]
        self.labels: dict[int, np.ndarray] = {}

    def features(self, images, conditions, spec):
        torch = self.torch
        import torch.nn.functional as F

        lab = torch.from_numpy(np.stack([self.labels[int(c["i"])] for c in conditions]))
        onehot = F.one_hot(lab, CLASSES).permute(0, 3, 1, 2).float()
        pyr = []
        for (side, c), p in zip(LEVELS, self.proj):
            s = side * self.size // 256
            low = F.adaptive_avg_pool2d(onehot, s)
            f = torch.einsum("ck,bkhw->bchw", p, low)
            pyr.append(f + 0.8 * torch.randn(f.shape, generator=torch.Generator().manual_seed(int(conditions[0]["i"]) * 7 + s)))
        return pyr


def peak_rss_gb() -> float:
    """This process's own high-water RSS (VmHWM: unlike ru_maxrss, not inherited through fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def materialise_one(size: int) -> None:
    """The baseline's per-image cost: every level upsampled and stacked at full resolution."""
    from synth_pixelhead import upsample

    gen = SyntheticFeatures(size)
    gen.labels[0] = masks(1, size)[0]
    full = upsample(gen.features(None, [{"i": 0}], None), (size, size))  # (1, C, H, W) float32
    print(json.dumps({"peak_rss_gb": peak_rss_gb(), "array_gb": full.numel() * 4 / 2**30}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--bank-mb", type=int, default=1024)
    ap.add_argument("--materialise-one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.materialise_one:
        return materialise_one(args.size)

    import torch

    from synth_diffusers import FeatureSpec
    from synth.annotations import Examples
    from synth_pixelhead import PixelHeadConfig
    from synth_pixelhead import image_uncertainty
    from synth_pixelhead import train_head

    torch.set_num_threads(2)
    n, size = args.images, args.size
    channels = sum(c for _, c in LEVELS)
    labels = masks(n + 1, size, seed=1)
    gen = SyntheticFeatures(size)
    gen.labels = {i: labels[i] for i in range(n + 1)}
    ex = Examples(np.zeros((n, size, size, 3), np.uint8), labels[:n], [{"i": i} for i in range(n)], [str(i) for i in range(n)], "real")
    cfg = PixelHeadConfig(annotations={"source": {"name": "x"}}, ensemble=args.ensemble, steps=args.steps, bank_mb=args.bank_mb, feature_batch=2)
    base_rss = peak_rss_gb()
    t0 = time.perf_counter()
    spec = FeatureSpec(blocks=("synthetic",), timesteps=(0,), noise_seed=0)
    ensemble, info = train_head(gen, spec, ex, cfg, [f"c{i}" for i in range(CLASSES)], seed=0)
    t_train = time.perf_counter() - t0
    train_rss = peak_rss_gb()
    t0 = time.perf_counter()
    pred, js = ensemble.predict(gen.features(None, [{"i": n}], None), (size, size))
    t_label = time.perf_counter() - t0
    acc = float((pred[0] == labels[n]).mean())
    peak = peak_rss_gb()

    one = json.loads(subprocess.run([sys.executable, __file__, "--materialise-one", "--size", str(size)], capture_output=True, text=True, check=True).stdout)
    full_fp32 = n * channels * size * size * 4 / 2**30
    print(f"pixel head memory: {n} images {size}x{size}, {channels} feature channels, {CLASSES} classes")
    print(f"  bank: {info['trained_on']['pixels']} pixels ({info['trained_on']['pixels_per_image']} per image, fp16, {args.bank_mb} MB budget)")
    print(f"  ensemble {args.ensemble} x {args.steps} steps: training {t_train:.1f} s (features {info['seconds']['features']:.1f} s)")
    print(f"  labelling one {size}x{size} image (low-res first layer): {t_label:.2f} s, pixel accuracy {acc:.3f}, mean top-10% JS {image_uncertainty(js, 0.1)[0]:.3f}")
    print(f"  synth peak RSS: {peak:.2f} GB (before training {base_rss:.2f} GB, after training {train_rss:.2f} GB)")
    print(f"  materialise-everything, measured on 1 image: peak RSS {one['peak_rss_gb']:.2f} GB (feature array {one['array_gb']:.2f} GB)")
    print(f"  materialise-everything for {n} images: feature array alone {full_fp32:.1f} GB float32 "
          f"({full_fp32 / 2:.1f} GB fp16 + a float32 copy = {full_fp32 * 1.5:.1f} GB as DatasetGAN does)")
    print(f"  ratio (materialised fp32 array / synth peak RSS): {full_fp32 / peak:.1f}x; goal synth <= 4 GB: {'met' if peak <= 4 else 'NOT met'}")


if __name__ == "__main__":
    main()
