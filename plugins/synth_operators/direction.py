"""`direction`: move samples along a direction in latent space, z + a w, with w from a file,
from "before" / "after" example images (inverted; the mean latent difference: the day-to-night
method), or from the principal components of many latents. A computed direction is saved under a
name and reused by name. A saved direction may also live in the generator's h-space (what
`synth discover` finds and saves): each child is then its parent's latent decoded with the shift
a * unit * w added there (synth.directions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from synth import directions
from synth.batch import Batch
from synth.errors import UsageError
from synth.expand import (
    child_index,
    conditions,
    decode_children,
    drop_seg,
    interleave,
    mark,
    need_latents,
)
from synth.manifest import source_step
from synth.protocols import PluginConfig, Stage
from synth.refs import SourceRef


class DirectionConfig(PluginConfig):
    added_later = frozenset({"keep_norm", "pca_source", "pca_hspace"})

    file: str | None = Field(None, description="A .npy direction of the latent's shape (relative to the manifest)")
    saved: str | None = Field(None, description="A direction saved earlier with save_as or by synth discover (in the cache: directions/NAME.npy)")
    before: SourceRef | None = Field(None, description="Source stage table of 'before' example images (inverted)")
    after: SourceRef | None = Field(None, description="Source stage table of 'after' example images, paired or not")
    examples: int = Field(16, ge=1, le=10000, description="How many before / after images to read")
    pca: int | None = Field(
        None, ge=0, le=64,
        description="Use this principal component: of `pca_samples` generated samples' points in the generator's h-space, "
        "else of the inverted latents of `pca_source`'s images (never of the initial noise, whose components are noise)",
    )
    pca_samples: int = Field(512, ge=8, le=100000)
    pca_source: SourceRef | None = Field(None, description="Source stage table of images whose inverted latents the components are taken from")
    pca_hspace: dict[str, Any] = Field(default_factory=dict, description="The h-space the components live in: {block, start, until} (default: mid, the first half of the steps)")
    alphas: list[float] = Field([-1.0, 1.0], min_length=1, description="Steps along the direction: z + a w")
    normalize: bool = Field(True, description="Scale w to unit RMS per latent element before the steps")
    keep_norm: bool = Field(
        True,
        description="Rescale each child's latent to its parent's norm: a diffusion model's initial latent is Gaussian noise, "
        "and a step that lengthens it leaves the noise the model was trained on (its images turn to colour noise); "
        "false: the plain z + a w",
    )
    save_as: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", description="Save the computed direction under this name")
    keep_parent: bool = True
    invert: dict[str, Any] = Field(default_factory=lambda: {"method": "fixed_point", "iterations": 2}, description="Options of the examples' inversion")

    @model_validator(mode="after")
    def _one_source(self):
        given = [n for n in ("file", "saved", "pca") if getattr(self, n) is not None] + (["before/after"] if self.before or self.after else [])
        if len(given) != 1:
            raise ValueError(f"give exactly one of file, saved, before + after, pca (got {', '.join(given) or 'none'})")
        if (self.before is None) != (self.after is None):
            raise ValueError("before and after go together")
        if self.pca is None and (self.pca_source is not None or self.pca_hspace):
            raise ValueError("pca_source and pca_hspace go with pca")
        return self


def _component(x: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """The k-th principal component of rows x, unit RMS, its largest element positive (a sign
    that does not depend on the solver), and the share of the variance it explains."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    if k >= len(vt):
        raise UsageError(f"stage 'direction'.pca: component {k} asked, {len(vt)} samples give {len(vt)} components")
    w = vt[k] * np.sqrt(len(vt[k]))
    w = w * np.sign(w[np.argmax(np.abs(w))])
    return w.astype(np.float32), round(float(sv[k] ** 2 / max((sv**2).sum(), 1e-30)), 6)


def step(z: np.ndarray, w: np.ndarray, a: float, keep_norm: bool) -> np.ndarray:
    """z + a w, rescaled to the norm of z when ``keep_norm`` (a step on the sphere the model's
    noise lives on, nearly: the direction still turns the latent by about atan(|a w| / |z|))."""
    out = np.asarray(z, np.float64) + a * np.asarray(w, np.float64)
    if keep_norm:
        norm = np.linalg.norm(out)
        out = out * (np.linalg.norm(z) / norm) if norm > 0 else out
    return out.astype(np.float32)


class Direction(Stage):
    """Children z + a w for each step a along a direction w (from a file, example pairs or PCA);
    class labels follow the parent."""

    name = "direction"
    kind = "expand"
    Config = DirectionConfig
    requires = frozenset({"decode"})
    scores = frozenset()
    latents = "needs"
    seg = "drops"

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        if config.file is not None and not plan.resolve_path(config.file).is_file():
            return [f"file: no such direction file {plan.resolve_path(config.file)}"]
        if config.saved is not None and not directions.exists(config.saved):
            return [f"saved: no direction saved as {config.saved!r} (in {directions.folder()}); compute it once with save_as or synth discover"]
        if config.file is not None and plan.generator is not None:
            shape = (plan.generator.cls.static_info(plan.generator.config, plan) or {}).get("latent_shape")
            try:
                w = np.load(plan.resolve_path(config.file), mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                return [f"file: cannot read {plan.resolve_path(config.file)}: {e}"]
            if shape is not None and tuple(w.shape) != tuple(shape):
                return [f"file: the direction has shape {tuple(w.shape)}, this generator's latents are {tuple(shape)}"]
        return []

    def setup(self) -> None:
        cfg, gen = self.config, self.context.generator
        self.meta: dict[str, Any] = {}
        if cfg.file is not None:
            w, how = self._load(self.context.resolve_path(cfg.file), "file"), {"from": "file", "file": cfg.file}
        elif cfg.saved is not None:
            w, self.meta = directions.load(cfg.saved, "stage 'direction'.saved")
            how = {"from": "saved", "saved": cfg.saved}
        elif cfg.pca is not None:
            w, how, self.meta = self._pca()
        else:
            w, how = self._from_examples(), {"from": "examples", "examples": cfg.examples}
        self.spec = None
        if directions.space(self.meta) == "h":
            if not gen.supports("hspace"):
                raise UsageError(f"stage 'direction'.saved: {cfg.saved!r} lives in h-space, which generator {gen.name!r} does not have")
            self.spec = gen.hspace_spec(self.meta.get("hspace") or {})
            shape = gen.hspace_shape(self.spec)
            if tuple(w.shape) != tuple(shape):
                raise UsageError(f"stage 'direction'.saved: {cfg.saved!r} has shape {tuple(w.shape)}, this generator's h-space is {tuple(shape)} (found with another model?)")
            self.w, self.how = w, {**how, "space": "h"}  # already in the space's units: normalize does not apply
            if cfg.save_as:
                directions.save(cfg.save_as, self.w, {**self.meta, "how": how, "generator": json.loads(gen.fingerprint())})
            return
        shape = gen.latent_shape()
        if shape is not None and tuple(w.shape) != shape:
            raise UsageError(f"stage 'direction': the direction has shape {tuple(w.shape)}, this generator's latents are {shape}")
        if cfg.normalize:
            w = w / max(float(np.sqrt((w.astype(np.float64) ** 2).mean())), 1e-12)
        self.w = w.astype(np.float32)
        self.how = how
        if cfg.save_as:
            directions.save(cfg.save_as, self.w, {**how, "space": "latent", "generator": json.loads(gen.fingerprint())})

    def share(self):
        return {"w": self.w, "how": self.how, "meta": self.meta}

    def adopt(self, shared) -> None:
        self.w, self.how, self.meta = shared["w"], shared["how"], shared["meta"]
        self.spec = self.context.generator.hspace_spec(self.meta.get("hspace") or {}) if directions.space(self.meta) == "h" else None

    def _load(self, path: Path, field: str) -> np.ndarray:
        try:
            w = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"stage 'direction'.{field}: cannot read {path}: {e}") from None
        return np.asarray(w, np.float32)

    def _pca(self) -> tuple[np.ndarray, dict, dict]:
        """A principal direction of points that carry what images show: h-space points of
        generated samples where the generator has that space, else inverted latents of real
        images. (The initial latents are i.i.d. noise: their components are noise directions.)
        Returns (w, how, meta); w is unit-RMS, its sign fixed by its largest element."""
        gen, cfg, seed = self.context.generator, self.config, self.context.seed
        n = cfg.pca_samples
        if cfg.pca_source is not None:
            z = self._examples(cfg.pca_source, "pca_source", n)
            w, share = _component(z.reshape(len(z), -1), cfg.pca)
            return w.reshape(z.shape[1:]), {"from": "pca", "component": cfg.pca, "samples": len(z), "of": "inverted", "explained": share}, {}
        if not gen.supports("hspace"):
            raise UsageError(f"stage 'direction'.pca: generator {gen.name!r} has no h-space to take components in; give pca_source, images whose inverted latents they come from")
        spec = gen.hspace_spec(cfg.pca_hspace)
        idx = list(range(n))
        z = gen.sample_latents(idx, seed + 1)
        acts, unit = gen.hspace_activations(z, [gen.condition(i) for i in idx], idx, seed + 1, spec)
        w, share = _component(acts.reshape(n, -1), cfg.pca)
        meta = {"space": "h", "hspace": {"block": spec.block, "start": spec.start, "until": spec.until}, "unit": unit}
        return w.reshape(acts.shape[1:]), {"from": "pca", "component": cfg.pca, "samples": n, "of": "hspace", "explained": share}, meta

    def _examples(self, table: dict[str, Any], where: str, count: int | None = None) -> np.ndarray:
        step = source_step(self.context.registry, table, f"stage 'direction'.{where}")
        stage = step.cls(step.config, self.context)
        stage.setup()
        batch = stage.produce(list(range(count or self.config.examples)))
        if len(batch) == 0:
            raise UsageError(f"stage 'direction'.{where}: no usable example images")
        return self.context.generator.invert(batch.images, conditions(batch), self.config.invert)

    def _from_examples(self) -> np.ndarray:
        before = self._examples(self.config.before, "before")
        after = self._examples(self.config.after, "after")
        return (after.mean(0) - before.mean(0)).astype(np.float32)

    def process(self, batch: Batch) -> Batch:
        gen, cfg, seed = self.context.generator, self.config, self.context.seed
        z = need_latents(batch, self.name)
        rows, keys, ops, lat, idx, shifts = [], [], [], [], [], []
        for r, (key, rec) in enumerate(zip(batch.keys, batch.records)):
            index = int(rec.get("index", 0))
            for j, a in enumerate(cfg.alphas):
                rows.append(r)
                keys.append(f"{key}_d{j}")
                ops.append({"op": "direction", "alpha": a, "step": j, **self.how})
                if self.spec is None:
                    lat.append(step(z[r], self.w, a, cfg.keep_norm))
                else:  # an h-space edit: the parent's own latent, shifted while it decodes
                    lat.append(z[r])
                    shifts.append(directions.shift(self.w, self.meta, a))
                idx.append(child_index(seed, index, "direction", key, j))
        children = batch.derive(rows, keys, ops)
        children.latents = self.context.as_stored(np.stack(lat))
        if self.spec is None:
            children.images = decode_children(gen, children.latents, conditions(children), idx, seed)
        else:
            children.images = gen.decode_shifted(np.stack(lat), conditions(children), idx, seed, np.stack(shifts), self.spec)
        for rec, r, i in zip(children.records, rows, idx):
            # an h-space child is no plain decode of its latent (the shift is in its lineage)
            mark(rec, batch.keys[r], i if self.spec is None else None, seed)
        for key, rec in zip(batch.keys, batch.records):
            rec["group"] = rec.get("group") or key
        return drop_seg(interleave(batch, children, len(cfg.alphas), cfg.keep_parent))
