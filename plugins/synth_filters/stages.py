"""Per-sample filters (realism, clip_score, memorisation) and dataset-level stages (dedup,
select, metrics). Every score lands in the sample's ``scores``; every drop has a reason and the
sample's own value."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from synth import extractors
from synth.batch import Batch
from synth.errors import UsageError
from synth.fidelity import fid, kid, knn_radii, nearest, prdc, realism
from synth.protocols import DatasetStage, PluginConfig, Stage
from synth.refs import ExtractorRef
from synth.selection import k_center

from .reference import ReferenceConfig, check_size, reference_features

Extractor = ExtractorRef


class _WithReference(Stage):
    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        return check_size(plan, config.reference.source)

    def _reference(self) -> np.ndarray:
        gen = self.context.generator
        shape = gen.image_shape() if gen is not None else None
        return reference_features(self.context, self.config.reference, self.config.extractor, f"stage {self.name!r}", shape)


# -- per-sample filters ------------------------------------------------------------------------------
class RealismConfig(PluginConfig):
    reference: ReferenceConfig
    extractor: Extractor = Field("shapes", description="Feature extractor (name or table)")
    k: int = Field(3, ge=1, le=50)
    min: float = Field(1.0, gt=0, le=100, description="Drop samples whose realism score is below this (1: the edge of the real manifold)")


class Realism(_WithReference):
    """Realism score (Kynkaanniemi et al.) of each sample against real images; drops the unreal."""

    name = "realism"
    kind = "filter"
    Config = RealismConfig
    scores = frozenset({"realism"})

    @classmethod
    def bounds(cls, config):
        return {"score": "realism", "min": config.min}

    def setup(self) -> None:
        self.ref = self._reference()
        if len(self.ref) <= self.config.k:
            raise UsageError(f"stage 'realism'.reference: {len(self.ref)} images, more than k = {self.config.k} needed")
        self.radii = knn_radii(self.ref, self.config.k)

    def process(self, batch: Batch) -> Batch:
        feats = extractors.features(self.context, batch, self.config.extractor)
        score = realism(self.ref, feats, self.config.k, radii=self.radii)
        for rec, s in zip(batch.records, score):
            rec.setdefault("scores", {})["realism"] = round(float(s), 5)
        return batch.keep(score >= self.config.min, self.name, f"realism < min {self.config.min:g}", [f"{s:.4f}" for s in score])


class MemorisationConfig(PluginConfig):
    reference: ReferenceConfig = Field(description="The images the generator was trained on (or any set it must not copy)")
    extractor: Extractor = "shapes"
    percentile: float = Field(1.0, gt=0, lt=50, description="Threshold: this percentile of the reference's own nearest-neighbour distances")


class Memorisation(_WithReference):
    """Drops samples closer to a reference (training) image than reference images are to each
    other (the given percentile): copies, near-copies, a training image with small noise."""

    name = "memorisation"
    kind = "filter"
    Config = MemorisationConfig
    scores = frozenset({"memorisation_distance"})

    def setup(self) -> None:
        self.ref = self._reference()
        nn = knn_radii(self.ref, 1)
        self.threshold = float(np.percentile(nn, self.config.percentile))

    def share(self):
        return {"ref": self.ref, "threshold": self.threshold}

    def adopt(self, shared) -> None:
        self.ref, self.threshold = shared["ref"], shared["threshold"]

    def process(self, batch: Batch) -> Batch:
        feats = extractors.features(self.context, batch, self.config.extractor)
        dist, idx = nearest(feats, self.ref)
        for rec, d, j in zip(batch.records, dist, idx):
            rec.setdefault("scores", {})["memorisation_distance"] = round(float(d), 5)
        reason = f"memorised: closer to a reference image than {self.config.percentile:g}% of reference pairs ({self.threshold:.4g})"
        return batch.keep(dist >= self.threshold, self.name, reason, [f"distance {d:.4g} to reference image {j}" for d, j in zip(dist, idx)])


class ClipScoreConfig(PluginConfig):
    extractor: Extractor = Field(description="A CLIP extractor table, e.g. {name = \"clip\", model = \"openai/clip-vit-base-patch32\"}")
    min: float | None = Field(None, ge=0, le=100, description="Drop samples whose CLIP score is below this")


class ClipScore(Stage):
    """Image-prompt agreement (100 x cosine of CLIP embeddings, 0 when negative) of text-
    conditioned samples; drops those below `min`."""

    name = "clip_score"
    kind = "filter"
    Config = ClipScoreConfig
    scores = frozenset({"clip_score"})
    requires = frozenset({"condition:prompt"})

    @classmethod
    def bounds(cls, config):
        return {"score": "clip_score", "min": config.min} if config.min is not None else None

    def process(self, batch: Batch) -> Batch:
        prompts = [(r.get("condition") or {}).get("prompt") for r in batch.records]
        missing = [k for k, p in zip(batch.keys, prompts) if not p]
        if missing:
            raise UsageError(f"stage 'clip_score': sample {missing[0]} has no prompt (clip_score is for text-conditioned samples)")
        img = extractors.features(self.context, batch, self.config.extractor)
        txt = extractors.get(self.context, self.config.extractor).embed_text(prompts)
        cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) * (txt / np.linalg.norm(txt, axis=1, keepdims=True))
        score = 100 * np.clip(cos.sum(1), 0, None)
        for rec, s in zip(batch.records, score):
            rec.setdefault("scores", {})["clip_score"] = round(float(s), 4)
        if self.config.min is None:
            return batch
        return batch.keep(score >= self.config.min, self.name, f"clip_score < min {self.config.min:g}", [f"{s:.2f}" for s in score])


# -- dataset-level ----------------------------------------------------------------------------------
class DedupConfig(PluginConfig):
    extractor: Extractor = "shapes"
    threshold: float | None = Field(
        None, gt=0, le=1,
        description="Cosine similarity at or above which two samples are duplicates; unset: from real-to-real distances (the reference's when given, else the extractor's measured value)",
    )
    reference: ReferenceConfig | None = Field(None, description="Real images whose nearest-neighbour distances set the threshold (as memorisation's do)")
    percentile: float = Field(1.0, gt=0, lt=50, description="With reference: duplicates are closer than this percentile of the reference's own nearest-neighbour distances")
    added_later = frozenset({"reference", "percentile"})

    @model_validator(mode="after")
    def _one_rule(self):
        if self.threshold is not None and self.reference is not None:
            raise ValueError("give threshold or reference, not both")
        return self


class Dedup(DatasetStage):
    """Near-duplicates across the whole run (cosine of features): of each group, the sample with
    the lowest source index is kept, whatever shard or batch the others came in. Two samples are
    duplicates when they are closer than real images are to their nearest other real image (the
    reference's 1st percentile, or the extractor's own measurement): a fixed cosine such as 0.95
    means nothing across extractors (on the shapes features, real scenes sit at 0.991 from their
    nearest neighbour, so 0.95 merged different scenes)."""

    name = "dedup"
    kind = "dataset"
    Config = DedupConfig
    selects = True

    @classmethod
    def wants(cls, config) -> list:
        return [config.extractor]

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        problems: list[str] = []
        if config.reference is not None:
            return check_size(plan, config.reference.source)
        ex = plan.registry.extractors.get(str(extractors.as_table(config.extractor).get("name")))  # unknown: said by the reference check
        if config.threshold is None and ex is not None:
            if ex.duplicate_cosine is None:
                problems.append(
                    f"threshold: extractor {ex.name!r} has no measured duplicate threshold; give threshold, or reference = {{source = ...}} "
                    "(real images whose nearest-neighbour distances set it)"
                )
        return problems

    def setup(self) -> None:
        cfg = self.config
        if cfg.threshold is not None:
            self.cosine, self.origin = cfg.threshold, ""
        elif cfg.reference is not None:
            gen = self.context.generator
            ref = reference_features(self.context, cfg.reference, cfg.extractor, f"stage {self.name!r}", gen.image_shape() if gen is not None else None)
            ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
            nn = knn_radii(ref, 1)  # euclidean between unit vectors: 1 - cos = d^2 / 2
            d = float(np.percentile(nn, cfg.percentile))
            self.cosine, self.origin = 1 - d * d / 2, f", closer than {cfg.percentile:g}% of {len(ref)} reference images to their nearest"
        else:
            ex = self.context.registry.extractor(extractors.as_table(cfg.extractor)["name"], "extractor.name")
            self.cosine, self.origin = float(ex.duplicate_cosine), f", extractor {ex.name!r}'s measured real-to-real threshold"

    def select(self, table):
        f = table.features[extractors.extractor_id(self.config.extractor)].astype(np.float32)
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        order = np.lexsort((np.arange(len(table)), table.index))  # by source index, then position
        kept_rows: list[int] = []
        keep = np.zeros(len(table), bool)
        reasons, details = [""] * len(table), [""] * len(table)
        block = 1024
        for s in range(0, len(order), block):
            rows = order[s : s + block]
            prior = np.array(kept_rows, np.int64)
            sim_prior = f[rows] @ f[prior].T if len(prior) else np.zeros((len(rows), 0), np.float32)
            sim_block = f[rows] @ f[rows].T
            for a, r in enumerate(rows):
                best, who = -1.0, None
                if sim_prior.shape[1]:
                    j = int(sim_prior[a].argmax())
                    best, who = float(sim_prior[a, j]), int(prior[j])
                for b in range(a):  # earlier rows of this block that were kept
                    if keep[rows[b]] and sim_block[a, b] > best:
                        best, who = float(sim_block[a, b]), int(rows[b])
                if who is not None and best >= self.cosine:
                    reasons[r] = f"near-duplicate (cosine >= {self.cosine:.4g}{self.origin})"
                    details[r] = f"of {table.keys[who]} (cosine {best:.4f})"
                else:
                    keep[r] = True
            kept_rows += [int(r) for r in rows if keep[r]]
        return keep, reasons, details


class SelectConfig(PluginConfig):
    method: Literal["k_center", "class_quota", "influence"] = Field(
        "k_center",
        description="k_center: cover the feature space; class_quota: balance the classes; influence: what teaches the validation set "
        "most (the highest scores.influence, recorded by an earlier influence stage)",
    )
    keep: int | None = Field(None, ge=1, description="How many samples to keep")
    fraction: float | None = Field(None, gt=0, le=1, description="Or this share of them")
    extractor: Extractor = "shapes"

    @model_validator(mode="after")
    def _one(self):
        if (self.keep is None) == (self.fraction is None):
            raise ValueError("give keep or fraction")
        return self


class Select(DatasetStage):
    """Keep N of the run's samples: by k-center greedy on features (the most varied) or by class
    quota (balanced); deterministic, lowest source index first on ties."""

    name = "select"
    kind = "dataset"
    Config = SelectConfig
    selects = True

    @classmethod
    def wants(cls, config) -> list:
        return [config.extractor] if config.method == "k_center" else []

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        if config.method == "influence":
            recorded = plan.scores_before()
            if recorded is not None and "influence" not in recorded:
                return ["method = \"influence\" keeps the highest scores.influence; put the influence stage (plugin optimise) before select"]
        return []

    def select(self, table):
        n = len(table)
        target = self.config.keep if self.config.keep is not None else int(round(self.config.fraction * n))
        target = min(target, n)
        order = np.lexsort((np.arange(n), table.index))
        keep = np.zeros(n, bool)
        if self.config.method == "class_quota":
            classes = sorted(set(table.cls.tolist()))
            per = {c: 0 for c in classes}
            quota = {c: target // len(classes) + (1 if i < target % len(classes) else 0) for i, c in enumerate(classes)}
            for r in order:
                c = int(table.cls[r])
                if per[c] < quota[c]:
                    keep[r], per[c] = True, per[c] + 1
            why = "over its class's quota"
        elif self.config.method == "influence":
            value = np.array([s.get("influence", -np.inf) for s in table.scores], np.float64)
            best = np.lexsort((table.index, -value))[:target]  # highest first, lowest index on ties
            keep[best] = True
            why = f"not among the {target} most influential"
        else:
            f = table.features[extractors.extractor_id(self.config.extractor)].astype(np.float32)
            keep[k_center(f, order, target)] = True
            why = f"not among the {target} k-center picks"
        return keep, ["" if k else why for k in keep], ["" for _ in keep]


class MetricsConfig(PluginConfig):
    reference: ReferenceConfig
    extractor: Extractor = "shapes"
    k: int = Field(3, ge=1, le=50, description="Neighbours of precision / recall / density / coverage")
    kid_subsets: int = Field(100, ge=1)
    kid_subset_size: int = Field(1000, ge=2)


class Metrics(_WithReference, DatasetStage):
    """FID, KID, precision, recall, density and coverage of the final dataset against a reference
    set, plus its class balance, into dataset.json and the card."""

    name = "metrics"
    kind = "dataset"
    Config = MetricsConfig
    measures = True

    @classmethod
    def wants(cls, config) -> list:
        return [config.extractor]

    def setup(self) -> None:
        self.ref = self._reference()

    def measure(self, table) -> dict:
        cfg = self.config
        f = table.features[extractors.extractor_id(cfg.extractor)]
        out: dict[str, Any] = {"samples": len(table), "reference": {"samples": int(len(self.ref)), "source": cfg.reference.source}, "extractor": extractors.as_table(cfg.extractor)}
        out["figures"] = [["fid", "FID"], ["kid", "KID"], ["precision", "precision"], ["recall", "recall"], ["density", "density"], ["coverage", "coverage"]]
        if len(table) > cfg.k and len(self.ref) > cfg.k:
            out.update({k: round(v, 6) for k, v in prdc(self.ref, f, cfg.k).items()})
        if len(table) >= 2:
            out["fid"] = round(fid(self.ref, f), 4)
            m, s = kid(self.ref, f, cfg.kid_subsets, cfg.kid_subset_size)
            out["kid"], out["kid_std"] = round(m, 6), round(s, 6)
        classes = self.context.classes
        counts = np.bincount(table.cls[table.cls >= 0], minlength=len(classes)) if len(classes) else np.zeros(0)
        if counts.sum():
            out["class_balance"] = {classes[i]: int(c) for i, c in enumerate(counts)}
        return out
