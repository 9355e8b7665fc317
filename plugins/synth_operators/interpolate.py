"""`interpolate`: samples on the path between two samples' latents (spherical interpolation),
between random pairs, pairs within a class, or pairs listed by key."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from synth.batch import Batch
from synth.errors import UsageError
from synth.expand import (
    child_index,
    child_rng,
    conditions,
    decode_children,
    drop_seg,
    interleave,
    mark,
    need_latents,
)
from synth.protocols import PluginConfig, Stage

from .partners import expand_shards, generated_partner, shard_latents


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of two latents (exactly a at t = 0 and b at t = 1)."""
    if t == 0:
        return a.astype(np.float32).copy()
    if t == 1:
        return b.astype(np.float32).copy()
    fa, fb = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    cos = np.dot(fa, fb) / max(np.linalg.norm(fa) * np.linalg.norm(fb), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        out = (1 - t) * fa + t * fb
    else:
        out = (np.sin((1 - t) * omega) * fa + np.sin(t * omega) * fb) / np.sin(omega)
    return out.reshape(a.shape).astype(np.float32)


class InterpolateConfig(PluginConfig):
    pairs: Literal["random", "class", "keys"] = Field("class", description="Partner: random, random within the class, or listed by key")
    keys: list[tuple[str, str]] | None = Field(None, description="pairs = \"keys\": [[sample, partner], ...]")
    shards: str | None = Field(None, description="Where partners listed by key are read from (their latent.npy): shards or an output folder")
    alphas: list[float] | None = Field([0.25, 0.5, 0.75], description="Interpolation weights towards the partner, each in [0, 1]")
    random_alphas: int | None = Field(None, ge=1, le=256, description="Instead of alphas: this many random weights per sample")
    keep_parent: bool = True

    @model_validator(mode="after")
    def _consistent(self):
        if self.pairs == "keys" and not self.keys:
            raise ValueError('pairs = "keys" needs keys = [["s00000001", "s00000007"], ...]')
        if self.pairs != "keys" and self.keys:
            raise ValueError('keys are for pairs = "keys"')
        if self.random_alphas is None and not self.alphas:
            raise ValueError("give alphas or random_alphas")
        if self.alphas and not all(0 <= a <= 1 for a in self.alphas):
            raise ValueError("alphas must lie in [0, 1]")
        return self


class Interpolate(Stage):
    """Children between each sample and a partner: slerp of their latents, decoded; the class of
    the nearer endpoint, with class_soft when the two differ."""

    name = "interpolate"
    kind = "expand"
    Config = InterpolateConfig
    requires = frozenset({"decode", "sample"})
    scores = frozenset()
    latents = "needs"
    seg = "drops"

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        if config.pairs != "keys":
            return []
        for key, _ in config.keys:
            m = re.fullmatch(r"s(\d{8})(_[A-Za-z0-9_-]+)?", key)
            if m is None or int(m.group(1)) >= plan.num_samples:
                return [f"keys: sample {key!r} is not a sample of this run (its keys are s00000000 .. s{plan.num_samples - 1:08d}, and their children's)"]
        if config.shards is None:
            return []
        try:
            found = shard_latents(expand_shards(config.shards, plan.resolve_path), {b for _, b in config.keys})
        except UsageError as e:
            return [str(e)]
        missing = sorted({b for _, b in config.keys} - set(found))
        if missing:
            return [f"keys: partner {missing[0]} is not in {config.shards}"]
        no_latent = sorted(k for k, v in found.items() if v["latent"] is None)
        return [f"keys: partner {no_latent[0]} in {config.shards} has no latent.npy"] if no_latent else []

    def setup(self) -> None:
        cfg = self.config
        self.partner_latents = {}
        if cfg.pairs == "keys" and cfg.shards is not None:
            found = shard_latents(expand_shards(cfg.shards, self.context.resolve_path), {b for _, b in cfg.keys})
            self.partner_latents = {k: (v["latent"], v["record"]) for k, v in found.items()}
        self.wanted = dict(cfg.keys or [])
        if cfg.pairs == "class" and self.context.generator.condition(0).get("class") is None:
            raise UsageError('stage \'interpolate\': pairs = "class" needs class labels from the generator (a class-conditional model or templates); use pairs = "random"')

    def _alphas(self, index: int, key: str) -> list[float]:
        cfg = self.config
        if cfg.random_alphas:
            return [round(float(a), 6) for a in child_rng(self.context.seed, index, "interpolate-alpha", key).uniform(0, 1, cfg.random_alphas)]
        return list(cfg.alphas)

    def _partner(self, key: str, rec: dict, batch: Batch, r: int):
        """(partner key, latent, condition, class)."""
        cfg, gen, seed = self.config, self.context.generator, self.context.seed
        if cfg.pairs == "keys":
            other = self.wanted[key]
            if other in self.partner_latents:
                z, prec = self.partner_latents[other]
                return other, z, prec.get("condition") or {}, prec.get("class")
            if other in batch.keys:
                j = batch.keys.index(other)
                return other, np.asarray(batch.latents[j], np.float32), batch.records[j].get("condition") or {}, batch.records[j].get("class")
            if other.startswith("s") and other[1:].isdigit() and _generated(rec):
                j = int(other[1:])
                return other, gen.sample_latents([j], seed)[0], gen.condition(j), gen.condition(j).get("class")
            raise UsageError(f"stage 'interpolate': partner {other} of {key} is neither in shards = ... nor a generated sample of this run")
        if not _generated(rec):
            raise UsageError(
                f"stage 'interpolate': sample {key} was not generated here, so no partner latent can be recomputed from a seed; "
                f'use pairs = "keys" with shards = ...'
            )
        index = int(rec.get("index", 0))
        j = generated_partner(gen, seed, self.context.num_samples, index, key, "interpolate", cfg.pairs == "class", rec.get("class"))
        cond = gen.condition(j)
        return f"s{j:08d}", gen.sample_latents([j], seed)[0], cond, cond.get("class")

    def process(self, batch: Batch) -> Batch:
        gen, seed = self.context.generator, self.context.seed
        z = need_latents(batch, self.name)
        rows, keys, ops, lat, idx, soft, conds, classes = [], [], [], [], [], [], [], []
        per_parent = None
        for r, (key, rec) in enumerate(zip(batch.keys, batch.records)):
            if self.config.pairs == "keys" and key not in self.wanted:
                continue
            other, zb, cond_b, cls_b = self._partner(key, rec, batch, r)
            index = int(rec.get("index", 0))
            alphas = self._alphas(index, key)
            per_parent = len(alphas)
            cls_a = rec.get("class")
            for j, a in enumerate(alphas):
                rows.append(r)
                keys.append(f"{key}_i{j}")
                ops.append({"op": "interpolate", "partner": other, "alpha": a, "child": j})
                lat.append(slerp(z[r], zb, a))
                idx.append(child_index(seed, index, "interpolate", key, j))
                near_b = a > 0.5
                conds.append(cond_b if near_b else None)
                classes.append(cls_b if near_b else cls_a)
                soft.append(None if cls_a == cls_b or cls_a is None or cls_b is None else {str(cls_a): round(1 - a, 6), str(cls_b): round(a, 6)})
        if not rows:
            return batch
        children = batch.derive(rows, keys, ops)
        for rec, cond, cls, sft in zip(children.records, conds, classes, soft):
            if cond is not None:
                rec["condition"] = dict(cond)
            rec["class"] = cls
            rec["class_soft"] = sft
        children.latents = self.context.as_stored(np.stack(lat))
        children.images = decode_children(gen, children.latents, conditions(children), idx, seed)
        for rec, r, i in zip(children.records, rows, idx):
            mark(rec, batch.keys[r], i, seed)
        for key, rec in zip(batch.keys, batch.records):
            rec["group"] = rec.get("group") or key
        if self.config.pairs == "keys":  # only listed samples have children: append them after all parents
            return drop_seg(Batch.concat([batch, children]) if self.config.keep_parent else children)
        return drop_seg(interleave(batch, children, per_parent, self.config.keep_parent))


def _generated(rec: dict) -> bool:
    lineage = rec.get("lineage") or []
    return bool(lineage) and lineage[0].get("op") == "generate"
