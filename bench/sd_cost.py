"""How many rows does each Stable Diffusion model see per sample? Prints figures; asserts nothing.

Every model call in synth has a fixed size (torch's results depend on the call size, so a sample's
pixels would otherwise depend on its neighbours); rows beyond a call's samples are padding, work
for nothing. On a tiny random-weight Stable Diffusion (the model's size does not change the
count), each shipped SD manifest runs with its own batch size, steps, guidance and stages (the
stages that need other weights, pixelhead and SAM, are left out), once with the old fixed call
size of 16 and once with the default (chosen from [run] batch_size). Counted by forward hooks:
UNet rows per (sample x step x guidance branch), VAE decoder rows per sample, text-encoder rows
per (sample x branch). 1.00 means no padding.

Usage: python bench/sd_cost.py [--samples 64]
Last line: rows per sample: unet <u>, vae <v>, text <t> (ideal 1.00)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import tomllib
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ["stable_diffusion", "stable_diffusion_sam", "prompt_edit"]
NEEDS_OTHER_WEIGHTS = {"pixelhead", "sam"}


def small_manifest(name: str, model: Path, samples: int, micro_batch: int | None) -> str:
    import tomli_w

    data = tomllib.loads((ROOT / "manifests" / f"{name}.toml").read_text())
    gen = data["generator"]
    gen["model"] = str(model)
    gen.pop("height", None), gen.pop("width", None)  # the tiny model's own size
    if micro_batch is not None:
        gen["micro_batch"] = micro_batch
    data["dataset"]["num_samples"] = samples
    data["dataset"]["shard_size"] = samples
    data["dataset"]["output"] = "out"
    data["stage"] = [s for s in data.get("stage", []) if s.get("name") not in NEEDS_OTHER_WEIGHTS]
    return tomli_w.dumps(data)


class Counts:
    """Rows each model saw (forward hooks) and the rows the samples needed (decode calls)."""

    def __init__(self, torch):
        self.seen: Counter = Counter()
        self.needed: Counter = Counter()
        self.handle = torch.nn.modules.module.register_module_forward_hook(self._hook)

    def _hook(self, module, args, kwargs_or_out, *rest):
        kind = type(module).__name__
        if kind in ("UNet2DConditionModel", "Decoder", "CLIPTextModel") and args:
            first = args[0]
            if hasattr(first, "shape"):
                self.seen[{"UNet2DConditionModel": "unet", "Decoder": "vae", "CLIPTextModel": "text"}[kind]] += int(first.shape[0])


def measure(name: str, model: Path, samples: int, micro_batch: int | None, folder: Path) -> dict[str, float]:
    import torch

    from synth.engine import run
    from synth.manifest import load_manifest

    path = folder / f"{name}-{micro_batch}.toml"
    path.write_text(small_manifest(name, model, samples, micro_batch))
    m = load_manifest(path)
    gen_cfg = m.generator.config
    branches = 2 if gen_cfg.guidance_scale > 1 else 1
    counts = Counts(torch)
    decode = m.generator.cls._decode

    def counted(self, latents, *args, **kwargs):  # the rows the samples need, per decode
        n = len(latents)
        counts.needed["unet"] += n * gen_cfg.steps * branches
        counts.needed["vae"] += n
        counts.needed["text"] += n * branches
        return decode(self, latents, *args, **kwargs)

    m.generator.cls._decode = counted
    try:
        run(m, output=folder / f"out-{name}-{micro_batch}", quiet=True, overwrite=True)
    finally:
        m.generator.cls._decode = decode
        counts.handle.remove()
    return {k: counts.seen[k] / counts.needed[k] for k in ("unet", "vae", "text")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=64, help="samples per manifest (a multiple of their batch sizes: 64)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import build_stable_diffusion  # the tests' tiny random SD

    import torch

    torch.set_num_threads(min(4, os.cpu_count() or 1))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_stable_diffusion(folder / "sd-tiny")
        totals: dict[str, list[float]] = {}
        print(f"{'manifest':<22} {'batch':>5} {'call size':>10} {'unet':>6} {'vae':>6} {'text':>6}")
        for name in MANIFESTS:
            batch = tomllib.loads((ROOT / "manifests" / f"{name}.toml").read_text()).get("run", {}).get("batch_size", 32)
            for micro in (16, None):
                r = measure(name, model, args.samples, micro, folder)
                label = "16 (old)" if micro else "default"
                print(f"{name:<22} {batch:>5} {label:>10} {r['unet']:>6.2f} {r['vae']:>6.2f} {r['text']:>6.2f}")
                if micro is None:
                    for k, v in r.items():
                        totals.setdefault(k, []).append(v)
    worst = {k: max(v) for k, v in totals.items()}
    print(f"rows per sample: unet {worst['unet']:.2f}, vae {worst['vae']:.2f}, text {worst['text']:.2f} (ideal 1.00)")


if __name__ == "__main__":
    main()
