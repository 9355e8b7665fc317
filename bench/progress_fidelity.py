"""Shape fidelity along a fit, from the sample grids `synth fit` leaves in its output's progress/
folder (one per checkpoint, the same seeds each time): what a watch in feature space can miss.
Prints figures; asserts nothing.

Each grid's tiles (64 DDIM samples by default) go through the shapes world's oracle
(synth_shapes.oracle); fidelity = the share of foreground pixels it labels with confidence >= 0.9,
over the same share on real test scenes, with a bootstrap standard error over the tiles. The grids
share their seeds, so differences between checkpoints are less noisy than each error says.

    python bench/progress_fidelity.py MODEL_FOLDER [MORE_GRIDS.png ...] [--real 1000]

Last line, for scripts: `grids <n>; first <f0>; last <f1>; change <f1 - f0>`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))


def tiles(path: Path, size: int = 32, columns: int = 8) -> np.ndarray:
    """The grid's images at their own size (synth fit's grids are scaled up by nearest neighbour)."""
    from PIL import Image

    sheet = np.asarray(Image.open(path).convert("RGB"))
    scale = sheet.shape[1] // (columns * size)
    rows = sheet.shape[0] // (size * scale)
    step = size * scale
    return np.stack([sheet[r * step : (r + 1) * step : scale, c * step : (c + 1) * step : scale] for r in range(rows) for c in range(columns)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path, help="a synth fit output folder (its progress/samples-step-*.png)")
    ap.add_argument("grids", type=Path, nargs="*", help="other grids to score first (e.g. an earlier model's samples.png)")
    ap.add_argument("--real", type=int, default=1000, help="real test scenes for the reference share")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from synth_shapes import Oracle, confident_foreground
    from synth_shapes import render_many

    oracle = Oracle()
    real, _ = render_many(args.seed, range(args.real), 32, 0.5, "test")
    ref = confident_foreground(*oracle.predict(real))
    rng = np.random.default_rng(args.seed)
    grids = list(args.grids) + sorted((args.model / "progress").glob("samples-step-*.png"))
    if not grids:
        raise SystemExit(f"{args.model}: no progress/samples-step-*.png to score")
    print(f"real test scenes: {args.real}, confident foreground share {ref:.3f}")
    scores = []
    for path in grids:
        labels, conf = oracle.predict(tiles(path))
        n = len(labels)
        score = confident_foreground(labels, conf) / ref
        boot = [confident_foreground(labels[i], conf[i]) / ref for i in (rng.integers(0, n, n) for _ in range(1000))]
        scores.append(score)
        print(f"{path}: {n} samples, fidelity {score:.3f} ± {np.std(boot):.3f}")
    print(f"grids {len(scores)}; first {scores[0]:.3f}; last {scores[-1]:.3f}; change {scores[-1] - scores[0]:+.3f}")


if __name__ == "__main__":
    main()
