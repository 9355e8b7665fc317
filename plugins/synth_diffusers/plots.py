"""Small PIL-only pictures for training progress: a sample grid and a loss curve."""

from __future__ import annotations


import numpy as np
from PIL import Image, ImageDraw


def image_grid(images: np.ndarray, columns: int = 8, scale: int = 2) -> Image.Image:
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    pil = Image.fromarray(sheet)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def loss_curve(losses: list[float], width: int = 640, height: int = 320, smooth: int = 50) -> Image.Image:
    """Log-scale loss per step (grey) and its moving average (blue)."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    if len(losses) < 2:
        return img
    y = np.log10(np.maximum(np.asarray(losses, np.float64), 1e-8))
    k = max(1, min(smooth, len(y) // 5 or 1))
    avg = np.convolve(y, np.ones(k) / k, mode="valid")
    lo, hi = float(np.percentile(y, 1)), float(np.percentile(y, 99.5))
    hi = hi if hi > lo else lo + 1
    pad = 40

    def pts(series, offset):
        xs = np.linspace(pad, width - 10, len(y))
        return [(float(xs[i + offset]), float(height - pad - (v - lo) / (hi - lo) * (height - pad - 10))) for i, v in enumerate(series)]

    draw.line(pts(y, 0), fill=(200, 200, 200), width=1)
    draw.line(pts(avg, k - 1), fill=(30, 80, 200), width=2)
    draw.line([(pad, 10), (pad, height - pad), (width - 10, height - pad)], fill="black")
    for v in (lo, (lo + hi) / 2, hi):
        yy = height - pad - (v - lo) / (hi - lo) * (height - pad - 10)
        draw.text((2, yy - 6), f"{10 ** v:.3g}", fill="black")
    draw.text((pad, height - pad + 8), "step 0", fill="black")
    draw.text((width - 90, height - pad + 8), f"step {len(losses)}", fill="black")
    draw.text((pad + 10, 12), f"loss (log), last {k}-step mean {10 ** avg[-1]:.4f}", fill=(30, 80, 200))
    return img


