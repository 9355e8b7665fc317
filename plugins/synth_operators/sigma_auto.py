"""sigma = "auto": per class, the largest view radius at which a labeller still agrees with the
parent's label for a target share of views (default 95%), found before the first shard on
calibration samples of their own seeds, so no sample's views depend on its batch.

The labeller is any stage that labels images: one that sets each sample's class (a classifier
plugin; the shapes world's `shapes_classify`), or one that makes seg labels (the pixel head),
whose majority non-background class is the label.
"""

from __future__ import annotations

import io
import sys
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from synth.batch import Batch
from synth.errors import UsageError
from synth.manifest import stage_step
from synth.protocols import PluginConfig
from synth.refs import StageRef
from synth.seeding import sample_rng, sample_seed

from .common import mix


class AutoConfig(PluginConfig):
    """sigma = "auto": per class, the largest radius at which a labeller still agrees with the
    parent's label for `target` of the views."""

    added_later = frozenset({"on_miss"})

    labeller: StageRef = Field(description="A stage table that labels images, e.g. {name = \"shapes_classify\"}")
    label_from: Literal["class", "seg_majority"] = Field("class", description="The label: the class the labeller sets, or the majority non-background class of its seg")
    target: float = Field(0.95, gt=0, lt=1, description="Share of views whose label must agree with the parent's")
    samples: int = Field(24, ge=2, le=1000, description="Calibration parents (generated, their own seeds)")
    views: int = Field(4, ge=1, le=64, description="Views per calibration parent and radius")
    radii: list[float] = Field([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8], min_length=2, description="Radii searched, ascending")
    on_miss: Literal["smallest", "error"] = Field(
        "smallest",
        description="When even the smallest radius misses the target for a class: take the smallest (said in the run's "
        "summary, the card and the report, with the best agreement reached), or stop with an error",
    )

    @field_validator("radii")
    @classmethod
    def _ascending(cls, v):
        if sorted(v) != list(v) or not all(0 < r <= 1 for r in v):
            raise ValueError("radii must be ascending, each in (0, 1]")
        return v


def _labels(stage, images: np.ndarray, records: list[dict], label_from: str) -> list:
    batch = Batch(keys=[f"cal{i:06d}" for i in range(len(images))], images=images, records=[dict(r) for r in records])
    out = stage.process(batch)
    if len(out) != len(images):
        raise UsageError("sigma = \"auto\": the labeller dropped images; it must label every image (a transform)")
    if label_from == "class":
        return [r.get("class") for r in out.records]
    if out.seg is None:
        raise UsageError('sigma = "auto": label_from = "seg_majority" needs a labeller that makes seg labels')
    labels = []
    for seg in out.seg:
        counts = np.bincount(np.asarray(seg).ravel(), minlength=2)
        counts[0] = 0
        labels.append(int(counts.argmax()) if counts.sum() else 0)
    return labels


def calibrate(context, auto: AutoConfig) -> dict[str, Any]:
    gen = context.generator
    step = stage_step(context.registry, auto.labeller, "stage 'views'.auto.labeller", kinds=("transform",))
    labeller = step.cls(step.config, context)
    labeller.setup()
    cal_seed = sample_seed(context.seed, 0, "views-auto-calibration")
    idx = list(range(auto.samples))
    conds = [gen.condition(i) for i in idx]
    z = gen.sample_latents(idx, cal_seed)
    parents = gen.decode(z, conds, idx, cal_seed)
    records = [{"index": i, "condition": c, "class": c.get("class"), "lineage": [{"op": "generate"}]} for i, c in zip(idx, conds)]
    parent_labels = _labels(labeller, parents, records, auto.label_from)
    groups = sorted({str(lab) for lab in parent_labels})
    curve: dict[str, list[list[float]]] = {g: [] for g in groups + ["all"]}
    for r in auto.radii:
        lat, rec, own = [], [], []
        for i, zi in enumerate(z):
            for j in range(auto.views):
                e = sample_rng(cal_seed, i, f"views-auto:{r}:{j}").standard_normal(zi.shape).astype(np.float32)
                lat.append(mix(zi, e, r))
                rec.append(records[i])
                own.append(parent_labels[i])
        lat = np.stack(lat)
        view_idx = [sample_seed(cal_seed, k, f"views-auto:{r}") for k in range(len(lat))]
        images = gen.decode(lat, [x["condition"] for x in rec], view_idx, cal_seed)
        labels = _labels(labeller, images, rec, auto.label_from)
        agree = np.array([a == b for a, b in zip(labels, own)])
        for g in groups:
            mask = np.array([str(o) == g for o in own])
            curve[g].append([r, round(float(agree[mask].mean()), 4)])
        curve["all"].append([r, round(float(agree.mean()), 4)])
    radius = {g: largest_agreeing(curve[g], auto.target, auto.radii[0]) for g in curve}
    # classes for which no radius kept the target: the best agreement any radius reached
    missed = {g: max(share for _, share in curve[g]) for g in curve if curve[g][0][1] < auto.target}
    if missed:
        named = ", ".join(f"{_name(context, g)} (best {best:.0%})" for g, best in sorted(missed.items()))
        what = f'sigma = "auto": no radius from {auto.radii[0]:g} up kept {auto.target:.0%} agreement for {named}'
        if auto.on_miss == "error":
            raise UsageError(f"stage 'views'.auto: {what}; lower target, add smaller radii, or set on_miss = \"smallest\"")
        print(f"synth: warning: stage 'views': {what}; using the smallest radius, {auto.radii[0]:g}", file=sys.stderr)
    return {
        "op": "views sigma=auto",
        "target": auto.target,
        "labeller": step.name,
        "label_from": auto.label_from,
        "calibration_samples": auto.samples,
        "views_per_radius": auto.views,
        "radius": radius,
        "missed": missed,
        "curve": curve,
        "files": {"sigma_auto.png": plot(curve, radius, auto.target)},
    }


def _name(context, group: str) -> str:
    """A calibration group (a class id, or "all") as the user reads it."""
    classes = context.classes
    return classes[int(group)] if group.isdigit() and int(group) < len(classes) else group


def largest_agreeing(points: list[list[float]], target: float, smallest: float) -> float:
    """The largest radius such that every radius up to it keeps the target agreement."""
    best = smallest
    for r, share in points:
        if share < target:
            break
        best = r
    return float(best)


def plot(curve: dict[str, list[list[float]]], radius: dict[str, float], target: float) -> bytes:
    from PIL import Image, ImageDraw

    w, h, pad = 560, 320, 44
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top = max(r for pts in curve.values() for r, _ in pts) or 1.0
    d.line([(pad, 10), (pad, h - pad), (w - 10, h - pad)], fill="black")
    y = lambda v: h - pad - v * (h - pad - 20)  # noqa: E731
    x = lambda r: pad + r / top * (w - pad - 20)  # noqa: E731
    d.line([(pad, y(target)), (w - 10, y(target))], fill=(170, 170, 170))
    d.text((w - 120, y(target) - 14), f"target {target:.0%}", fill=(120, 120, 120))
    colours = [(30, 80, 200), (200, 60, 40), (40, 150, 60), (150, 60, 160), (200, 140, 0), (0, 0, 0)]
    for i, (name, pts) in enumerate(sorted(curve.items())):
        c = colours[i % len(colours)]
        d.line([(x(r), y(v)) for r, v in pts], fill=c, width=2)
        d.text((pad + 8, 14 + 14 * i), f"{name}: sigma {radius[name]:.2f}", fill=c)
    d.text((pad, h - pad + 8), "0", fill="black")
    d.text((w - 90, h - pad + 8), f"radius {top:.2f}", fill="black")
    d.text((4, y(1.0) - 6), "1.0", fill="black")
    d.text((4, y(0.0) - 6), "0.0", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
