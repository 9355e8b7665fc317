"""The shapes world's oracle segmenter: a small U-Net trained on as many world scenes as it
needs (the world gives exact masks for free), shipped as safetensors with its recipe.

It is the offline stand-in for a user's own reference model, and what sees geometry where the
pooled features of precision/recall do not:
- shape fidelity: the share of foreground pixels the oracle labels with confidence >= 0.9 on
  generated samples, divided by the same share on real scenes (1.0: as recognisable as real);
- label agreement: mIoU between a labeller's labels (the pixel head's) and the oracle's on
  generated samples: the labels' quality measured on synthetic data directly.

Retrain with ``python -m synth_shapes.oracle`` (the recipe's defaults; minutes on 2 CPU cores);
it writes oracle/oracle-32.safetensors and its card oracle-32.json (recipe, test mIoU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .world import CLASSES, render_many

WEIGHTS = Path(__file__).parent / "oracle" / "oracle-32.safetensors"
CONFIDENT = 0.9


def build(width: int = 32):
    import torch.nn as nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
        )

    class OracleUNet(nn.Module):
        """Three levels (32, 16, 8 px), skip connections, per-pixel class logits."""

        def __init__(self):
            super().__init__()
            w = width
            self.e1, self.e2, self.e3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.pool = nn.MaxPool2d(2)
            self.u2, self.d2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), block(4 * w, 2 * w)
            self.u1, self.d1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), block(2 * w, w)
            self.out = nn.Conv2d(w, len(CLASSES), 1)

        def forward(self, x):
            import torch

            a = self.e1(x)
            b = self.e2(self.pool(a))
            c = self.e3(self.pool(b))
            y = self.d2(torch.cat([self.u2(c), b], 1))
            y = self.d1(torch.cat([self.u1(y), a], 1))
            return self.out(y)

    return OracleUNet()


def _to_input(torch, images: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class Oracle:
    """The shipped oracle: ``predict(images)`` -> (labels (N, H, W), confidence (N, H, W))."""

    def __init__(self, weights: Path = WEIGHTS):
        import torch
        from safetensors.torch import load_file

        if not Path(weights).exists():
            raise FileNotFoundError(f"no oracle at {weights}; train one with python -m synth_shapes.oracle")
        meta = Path(weights).with_suffix(".json")
        self.meta = json.loads(meta.read_text()) if meta.exists() else {}
        self.torch = torch
        self.net = build(self.meta.get("recipe", {}).get("width", 32))
        self.net.load_state_dict(load_file(str(weights)))
        self.net.eval()

    def predict(self, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        if images.shape[1:3] != (32, 32):
            from PIL import Image

            images = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.BILINEAR)) for im in images])
        labels, conf = [], []
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                p = torch.softmax(self.net(_to_input(torch, images[i : i + batch])), dim=1)
                c, lab = p.max(dim=1)
                labels.append(lab.numpy())
                conf.append(c.numpy())
        return np.concatenate(labels), np.concatenate(conf)


def confident_foreground(labels: np.ndarray, confidence: np.ndarray, threshold: float = CONFIDENT) -> float:
    """Share of foreground pixels (oracle label != background) labelled with confidence >= threshold."""
    fg = labels != 0
    return float((confidence[fg] >= threshold).mean()) if fg.any() else 0.0


def shape_fidelity(oracle: Oracle, generated: np.ndarray, real: np.ndarray, threshold: float = CONFIDENT) -> dict[str, float]:
    """How recognisable generated shapes are, relative to real scenes (1.0 = as real)."""
    gen = confident_foreground(*oracle.predict(generated), threshold)
    ref = confident_foreground(*oracle.predict(real), threshold)
    return {"fidelity": gen / ref if ref else 0.0, "generated_confident": gen, "real_confident": ref}


def label_agreement(oracle: Oracle, images: np.ndarray, labels: np.ndarray) -> dict:
    """mIoU (and per class) between a labeller's labels and the oracle's, on the same images, and
    ``taken_for``: per oracle class, the share of its pixels the labeller gives each class (rows
    sum to 1), which says why a class agrees poorly (its shapes read as another, or as background)."""
    from synth.segmetrics import class_ious_from, confusion, mean_iou

    ref, _ = oracle.predict(images)
    conf = confusion(labels, ref, len(CLASSES))
    ious = class_ious_from(conf)
    shares = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    taken_for = {c: dict(zip(CLASSES, row.tolist())) for c, row in zip(CLASSES, shares)}
    return {"miou": mean_iou(ious), "iou": dict(zip(CLASSES, ious)), "taken_for": taken_for}


def worst_confusions(taken_for: dict, top: int = 3, least: float = 0.05) -> str:
    """The labeller's largest mistakes, e.g. "square as circle 0.60, square as triangle 0.29"."""
    mistakes = [(share, truth, label) for truth, row in taken_for.items() for label, share in row.items() if label != truth and share >= least]
    return ", ".join(f"{truth} as {label} {share:.2f}" for share, truth, label in sorted(mistakes, reverse=True)[:top]) or "none"


# -- the recipe ------------------------------------------------------------------------------------
def train(out: Path, steps: int, batch: int, pool: int, width: int, lr: float, seed: int, threads: int | None = None) -> dict:
    import torch
    from safetensors.torch import save_file

    from synth.segmetrics import class_ious, mean_iou

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.time()
    # The scenes the oracle is tested on are difficulty 0.5; train on a spread around it so the
    # oracle also knows harder and easier scenes than the generator was fitted on.
    parts = [render_many(seed, range(k * pool // 5, (k + 1) * pool // 5), 32, d, "oracle") for k, d in enumerate((0.3, 0.4, 0.5, 0.6, 0.7))]
    images = np.concatenate([p[0] for p in parts])
    masks = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.int64))
    x_all = _to_input(torch, images)
    t_render = time.time() - t0
    net = build(width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    net.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), batch))
        x, y = x_all[idx], masks[idx]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if rng.random() < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0:
            print(f"step {step}/{steps}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    test_images, test_masks = render_many(seed, range(1000), 32, 0.5, "test")
    with torch.inference_mode():
        pred = torch.cat([net(_to_input(torch, test_images[i : i + 250])).argmax(1) for i in range(0, 1000, 250)]).numpy()
    ious = class_ious(pred, test_masks, len(CLASSES))
    info = {
        "recipe": {"steps": steps, "batch": batch, "pool": pool, "width": width, "lr": lr, "seed": seed, "difficulties": [0.3, 0.4, 0.5, 0.6, 0.7], "split": "oracle"},
        "parameters": sum(p.numel() for p in net.parameters()),
        "render_seconds": round(t_render, 1),
        "train_seconds": round(time.time() - t0 - t_render, 1),
        "test": {"scenes": 1000, "split": "test", "difficulty": 0.5, "miou": round(mean_iou(ious), 4), "iou": {c: round(v, 4) for c, v in zip(CLASSES, ious)}},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out))
    out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description="Train the shapes-world oracle segmenter")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pool", type=int, default=30000, help="distinct training scenes")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    print(json.dumps(train(**vars(ap.parse_args())), indent=1))


if __name__ == "__main__":
    main()
