"""A small feature network for the shapes world, trained on the world's own labels.

The offline stand-in for Inception/DINOv2 in this world: its pooled features feed
precision/recall, and its per-class presence head says whether an image shows a recognisable
scene. Shipped as safetensors beside this file; retrain with
``python -m synth_shapes.featurenet --steps 3000`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .world import CLASSES, render_many

WEIGHTS = Path(__file__).parent / "featurenet" / "featurenet-32.safetensors"
MIN_PIXELS = 12  # a class is "present" when it covers at least this many pixels (of 1024)


def build():
    import torch.nn as nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())

    class ShapesFeatureNet(nn.Module):
        """Conv body; a presence head on pooled features and, for training only, a segmentation
        head at 16x16 that makes the features know what each shape is and where."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(block(3, 32, 1), block(32, 32, 1), block(32, 64, 2), block(64, 64, 1))
            self.deep = nn.Sequential(block(64, 128, 2), block(128, 128, 1), block(128, 128, 2))
            self.presence = nn.Linear(128, len(CLASSES) - 1)
            self.seg = nn.Conv2d(64, len(CLASSES), 1)

        def forward(self, x, with_seg: bool = False):
            mid = self.stem(x)
            feats = self.deep(mid).mean(dim=(2, 3))
            if with_seg:
                return feats, self.presence(feats), self.seg(mid)
            return feats, self.presence(feats)

    return ShapesFeatureNet()


def _to_input(images: np.ndarray, device="cpu"):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def presence_labels(masks: np.ndarray) -> np.ndarray:
    counts = np.stack([(masks == k).sum(axis=(1, 2)) for k in range(1, len(CLASSES))], 1)
    return (counts >= MIN_PIXELS).astype(np.float32)


class FeatureNet:
    """Loaded network: ``embed(images)`` -> (features (N, 128), presence probabilities (N, 3))."""

    def __init__(self, weights: Path = WEIGHTS):
        import torch
        from safetensors.torch import load_file

        if not Path(weights).exists():
            raise FileNotFoundError(f"no feature network at {weights}; train one with python -m synth_shapes.featurenet")
        self.torch = torch
        self.net = build()
        self.net.load_state_dict(load_file(str(weights)))
        self.net.eval()
        meta = Path(weights).with_suffix(".json")
        self.meta = json.loads(meta.read_text()) if meta.exists() else {}

    def embed(self, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        if images.shape[1:3] != (32, 32):
            from PIL import Image

            images = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in images])
        feats, probs = [], []
        with self.torch.inference_mode():
            for i in range(0, len(images), batch):
                f, logits = self.net(_to_input(images[i : i + batch]))
                feats.append(f.numpy())
                probs.append(self.torch.sigmoid(logits).numpy())
        return np.concatenate(feats), np.concatenate(probs)


def confident(probs: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """An image has a confident scene label when every class is clearly present or absent."""
    return ((probs < margin) | (probs > 1 - margin)).all(axis=1)


def train(out: Path, steps: int, batch: int, seed: int, size: int = 32, pool: int = 8000) -> dict:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = build()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    # A pool of scenes with difficulty spread over the whole range (rendering is the slow part).
    parts = [render_many(seed, range(k * pool // 8, (k + 1) * pool // 8), size, k / 7, "featurenet") for k in range(8)]
    pool_images = np.concatenate([p[0] for p in parts])
    pool_masks = np.concatenate([p[1] for p in parts])
    pool_labels = presence_labels(pool_masks)
    # Masks at the segmentation head's 16x16: the class covering most of each 2x2 block.
    h = size // 2
    blocks = pool_masks.reshape(-1, h, 2, h, 2).transpose(0, 1, 3, 2, 4).reshape(-1, h, h, 4)
    pool_seg = np.stack([(blocks == k).sum(-1) for k in range(len(CLASSES))], -1).argmax(-1)
    for step in range(steps):
        idx = rng.integers(0, len(pool_images), batch)
        images, labels = pool_images[idx], pool_labels[idx]
        seg = torch.from_numpy(pool_seg[idx])
        x = _to_input(images)
        if rng.random() < 0.5:
            x, seg = x.flip(-1), seg.flip(-1)
        _, logits, seg_logits = net(x, with_seg=True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels))
        loss = loss + torch.nn.functional.cross_entropy(seg_logits, seg)
        for g in opt.param_groups:
            g["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    net.eval()
    # Held-out accuracy on the test split (the same scenes metrics compare against).
    images, masks = render_many(seed, range(2000), size, 0.5, "test")
    with torch.inference_mode():
        _, logits = net(_to_input(images))
    probs = torch.sigmoid(logits).numpy()
    labels = presence_labels(masks)
    acc = float(((probs > 0.5) == labels).all(axis=1).mean())
    info = {
        "steps": steps,
        "batch": batch,
        "pool": pool,
        "seed": seed,
        "train_seconds": round(time.time() - t0, 1),
        "test_exact_presence_accuracy": round(acc, 4),
        "test_confident_share": round(float(confident(probs).mean()), 4),
        "classes": list(CLASSES[1:]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description="Train the shapes-world feature network")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=8000, help="distinct training scenes")
    print(json.dumps(train(**vars(ap.parse_args())), indent=1))


if __name__ == "__main__":
    main()
