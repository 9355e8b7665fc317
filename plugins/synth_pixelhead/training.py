"""Train a pixel head once, keep it: cached by the hash of what decides its weights.

The key covers the annotations (pixels and masks), the generator (its identity and weights), the
feature spec, the head's hyper-parameters, the class list and the seed. A second run with the same
inputs loads the cached head instead of training. A head folder (head.json + head.safetensors)
can be reused by path from any manifest that uses the same generator.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from synth.annotations import Examples
from synth.errors import UsageError
from synth.paths import cache_dir, replace_folder
from synth.seeding import sample_seed

from .bank import PixelBank
from .config import PixelHeadConfig
from .extraction import feature_groups
from .head import Ensemble, image_uncertainty, train_ensemble

FORMAT = "synth-pixelhead/1"
HYPER = ("ensemble", "hidden", "steps", "batch_pixels", "lr", "bank_mb", "balance")


def cache_root(cfg: PixelHeadConfig, context) -> Path:
    if cfg.cache_dir:
        return context.resolve_path(cfg.cache_dir)
    return cache_dir()


def head_key(examples: Examples, fingerprint: str, spec, cfg: PixelHeadConfig, classes: list[str], seed: int) -> str:
    blob = json.dumps(
        {
            "format": FORMAT,
            "annotations": examples.digest(),
            "generator": fingerprint,
            "spec": _spec_dict(spec),
            "head": {k: getattr(cfg, k) for k in HYPER},
            "classes": classes,
            "seed": seed,
            "calibration_samples": cfg.calibration_samples,
            "top_fraction": cfg.top_fraction,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _spec_dict(spec) -> dict:
    out = {"blocks": list(spec.blocks), "timesteps": list(spec.timesteps), "noise_seed": spec.noise_seed}
    for name in ("source", "inversion_steps"):  # generator-specific spec fields, when it has them
        if hasattr(spec, name):
            out[name] = getattr(spec, name)
    return out


class _Quiet:
    """A bar that shows nothing (callers without progress display)."""

    n = 0

    def update(self, n=1):
        self.n += n

    def close(self):
        pass


def quiet_bar(total, desc, unit):
    return _Quiet()


def fill_bank(generator, spec, examples: Examples, cfg: PixelHeadConfig, seed: int, bar=None) -> PixelBank:
    """Features of the labelled images, a bounded sample of pixels per image, into a bank."""
    from .pyramid import channels, sample_pixels

    n, h, w = examples.masks.shape
    bank = None
    for start in range(0, n, cfg.feature_batch):
        rows = np.arange(start, min(start + cfg.feature_batch, n))
        latents = None if examples.latents is None else [examples.latents[i] for i in rows]
        decode = None if examples.decode is None else [examples.decode[i] for i in rows]
        conds = [examples.conditions[i] for i in rows]
        for group, pyramid in feature_groups(generator, spec, examples.images[rows], conds, latents, decode):
            if bank is None:
                bank = PixelBank(channels(pyramid), n, h * w, cfg.bank_mb * 2**20)
            for j, i in enumerate(rows[group]):
                r, c = bank.pick(seed, int(i), examples.masks[i])
                feats = sample_pixels(pyramid, r, c, (h, w), j).clamp(-65000, 65000)
                bank.add(feats.cpu().numpy().astype(np.float16), examples.masks[i][r, c])
            del pyramid
        if bar is not None:
            bar.update(len(rows))
    return bank


def train_head(generator, spec, examples: Examples, cfg: PixelHeadConfig, classes: list[str], seed: int, bars=quiet_bar) -> tuple[Ensemble, dict]:
    """Features of the examples into a bank, then the ensemble; ``bars(total, desc, unit)``
    makes a progress bar per phase (synth.bars.progress_bar, or nothing)."""
    t0 = time.perf_counter()
    bar = bars(len(examples.keys), "pixel head: features of labelled images", "image")
    bank = fill_bank(generator, spec, examples, cfg, seed, bar)
    bar.close()
    t_feat = time.perf_counter() - t0
    device = generator.device  # train where the generator runs
    bar = bars(cfg.ensemble * cfg.steps, "pixel head: training", "step")
    ensemble, stats = train_ensemble(bank, len(classes), cfg.hidden, cfg.ensemble, cfg.steps, cfg.batch_pixels, cfg.lr, seed, lambda d, t: bar.update(d - bar.n), device, cfg.balance)
    bar.close()
    info = {
        "format": FORMAT,
        "classes": classes,
        "channels": bank.channels,
        "hidden": cfg.hidden,
        "ensemble": cfg.ensemble,
        "spec": _spec_dict(spec),
        "top_fraction": cfg.top_fraction,
        "trained_on": {
            "kind": examples.kind,
            "images": len(examples.keys),
            "keys": examples.keys,
            "image_size": list(examples.masks.shape[1:]),
            "pixels": len(bank),
            "pixels_per_image": bank.per_image,
            "class_pixels": bank.class_counts(len(classes)),
        },
        "train": {"steps": cfg.steps, "batch_pixels": cfg.batch_pixels, "lr": cfg.lr, "balance": cfg.balance, **stats},
        "seconds": {"features": round(t_feat, 2), "training": round(time.perf_counter() - t0 - t_feat, 2)},
    }
    return ensemble, info


def calibrate(generator, ensemble: Ensemble, spec, cfg: PixelHeadConfig, seed: int, bars=quiet_bar) -> list[float]:
    """Per-image uncertainty of fresh generated samples (their own seeds, not the dataset's):
    the distribution drop_uncertain draws its threshold from, so a sample's fate does not depend
    on which batch it came in."""
    n = cfg.calibration_samples
    if n == 0:
        return []
    cal_seed = sample_seed(seed, 0, "pixelhead-calibration")
    bar = bars(n, "pixel head: calibration samples", "sample")
    scores = []
    for start in range(0, n, cfg.feature_batch):
        idx = list(range(start, min(start + cfg.feature_batch, n)))
        conds = [generator.condition(i) for i in idx]
        latents = generator.sample_latents(idx, cal_seed)
        images = generator.decode(latents, conds, idx, cal_seed)
        chunk = np.empty(len(idx))
        decode = [{"index": i, "seed": cal_seed} for i in idx]
        for group, pyramid in feature_groups(generator, spec, images, conds, list(latents), decode):
            _, js = ensemble.predict(pyramid, images.shape[1:3])
            chunk[group] = image_uncertainty(js, cfg.top_fraction)
        scores += chunk.tolist()
        bar.update(len(idx))
    bar.close()
    return sorted(round(float(s), 6) for s in scores)


def save_head(folder: Path, ensemble: Ensemble, info: dict) -> None:
    """Write head.safetensors + head.json into ``folder`` atomically (a temp folder renamed)."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        save_file(ensemble.state(), str(tmp / "head.safetensors"))
        (tmp / "head.json").write_text(json.dumps(info, indent=1, sort_keys=True))

    replace_folder(folder, fill)


def load_head(folder: Path, where: str) -> tuple[Ensemble, dict]:
    from safetensors.torch import load_file

    meta, weights = folder / "head.json", folder / "head.safetensors"
    if not meta.is_file() or not weights.is_file():
        raise UsageError(f"{where}: {folder} is not a trained head (needs head.json and head.safetensors)")
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{where}: {meta} is not valid JSON: {e}") from None
    if info.get("format") != FORMAT:
        raise UsageError(f"{where}: {meta} has format {info.get('format')!r}, expected {FORMAT!r}")
    state = load_file(str(weights))
    ensemble = Ensemble.from_state(state, info["hidden"], len(info["classes"]), info["ensemble"])
    return ensemble, info
