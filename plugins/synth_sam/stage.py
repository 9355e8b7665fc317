"""The `sam` stage: Segment Anything on every sample, in one of three modes.

- auto: "segment everything" from a grid of point prompts (segment-anything's automatic mask
  generator's parameters), filtered by predicted IoU and stability, de-duplicated by box NMS;
- prompted: boxes / points from the manifest, from each sample's json, or from the regions of
  an earlier labeller (e.g. the pixel head's connected components);
- refine: each class region of the earlier labeller (the pixel head) prompted with its box and
  interior points; SAM's mask replaces the region when their IoU reaches `iou_threshold`,
  otherwise the head's region stays. Classes from the head, boundaries from SAM.

Per sample: ``inst.png`` (uint16 ids, 0 = none), ``instances`` records in the json (bbox XYWH,
area, predicted IoU, stability score, class, which mask was kept and the agreement), and
``seg.png`` when instances have classes. Each image is encoded once (in batches of
``encoder_batch_size``); every prompt of that image reuses its embedding.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from synth.batch import Batch
from synth.devices import accelerator_resources
from synth.errors import UsageError
from synth.paths import model_ref
from synth.protocols import Stage

from . import regions as R
from . import transform as T
from .config import Prompt, SamStageConfig


def _local_or_hub(ref: str, resolve) -> tuple[Path | None, str]:
    """(the local folder or None for a hub id, what to load from); see synth.paths.model_ref."""
    where, local = model_ref(ref, resolve)
    return (Path(where) if local else None), where


def _class_id(value, classes: list[str], where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        if classes and not 0 <= value < len(classes):
            raise UsageError(f"{where}: class {value} outside the {len(classes)} classes of [dataset].classes")
        return value
    if value not in classes:
        raise UsageError(f"{where}: class {value!r} is not one of [dataset].classes ({', '.join(classes) or 'none'})")
    return classes.index(value)


def _outside(prompt: Prompt, h: int, w: int) -> str | None:
    xs = [p[0] for p in prompt.points] + ([prompt.box[0], prompt.box[2]] if prompt.box else [])
    ys = [p[1] for p in prompt.points] + ([prompt.box[1], prompt.box[3]] if prompt.box else [])
    if min(xs) < 0 or min(ys) < 0 or max(xs) > w or max(ys) > h:
        what = f"box {list(prompt.box)}" if prompt.box and (min(prompt.box) < 0 or prompt.box[2] > w or prompt.box[3] > h) else f"points {[list(p) for p in prompt.points]}"
        return f"{what} lies outside the {w}x{h} image"
    return None


class SamStage(Stage):
    """Segment Anything: automatic instances, prompted masks, or refinement of a labeller's regions."""

    name = "sam"
    kind = "transform"
    Config = SamStageConfig
    seg = "makes"
    scores = frozenset({"sam_instances", "sam_agreement", "sam_kept_share"})

    # -- before anything loads ----------------------------------------------------------------
    @classmethod
    def resources(cls, config: SamStageConfig):
        return accelerator_resources(config.device)

    @classmethod
    def check_plan(cls, config: SamStageConfig, plan) -> list[str]:
        problems = []
        if config.backend == "segment-anything":
            if importlib.util.find_spec("segment_anything") is None:
                problems.append("backend 'segment-anything' needs the segment-anything package: pip install 'synth-data[sam]'")
            path = plan.resolve_path(config.checkpoint)
            if not path.is_file():
                problems.append(f"checkpoint: no such file {path}")
        else:
            local, where = _local_or_hub(config.model, plan.resolve_path)
            if local is not None and not local.is_dir():
                problems.append(f"model: no such folder {where}")
        if config.needs_seg() and not any(getattr(s.cls, "seg", None) == "makes" for s in plan.earlier()):
            what = "mode 'refine'" if config.mode == "refine" else "classes_from = 'seg'" if config.classes_from == "seg" else "prompts_from = 'seg'"
            problems.append(f"{what} needs class labels from an earlier stage (e.g. pixelhead); none before this one makes them")
        for i, p in enumerate(config.prompts):
            try:
                _class_id(p.class_, plan.classes, f"prompts[{i}]")
            except UsageError as e:
                problems.append(str(e))
        shape = None
        if plan.generator is not None:
            shape = (plan.generator.cls.static_info(plan.generator.config, plan) or {}).get("image_shape")
        if shape is not None:
            for i, p in enumerate(config.prompts):
                why = _outside(p, shape[0], shape[1])
                if why:
                    problems.append(f"prompts[{i}]: {why}")
        return problems

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from .backends import SegmentAnythingBackend, TransformersBackend, released_or_custom

        c = self.config
        if c.backend == "segment-anything":
            arch, arch_name = released_or_custom(c.model_type, c.architecture)
            self.backend = SegmentAnythingBackend(self.context.resolve_path(c.checkpoint), arch, arch_name, c.sha256, c.device, c.dtype)
        else:
            _, where = _local_or_hub(c.model, self.context.resolve_path)
            self.backend = TransformersBackend(c.model, where, c.revision, c.device, c.dtype)
        self.classes = list(self.context.classes)
        self.prompt_classes = [_class_id(p.class_, self.classes, f"prompts[{i}]") for i, p in enumerate(c.prompts)]

    # -- per batch ------------------------------------------------------------------------------
    def process(self, batch: Batch) -> Batch:
        import torch

        c, size = self.config, self.backend.image_size
        n, h, w, _ = batch.images.shape
        if self.config.needs_seg() and batch.seg is None:
            raise UsageError(f"stage 'sam': samples {batch.keys[0]}.. carry no class labels; put a labeller (e.g. pixelhead) before it")
        embeddings = []
        for s in range(0, n, c.encoder_batch_size):  # the encoder: once per image, batched
            embeddings.append(self.backend.embed(T.to_input(batch.images[s : s + c.encoder_batch_size], size, torch)))
        embeddings = torch.cat(embeddings)
        inst_maps, seg_maps = np.zeros((n, h, w), np.uint16), None if batch.seg is None else batch.seg.copy()
        makes_classes = c.mode == "refine" or c.classes_from != "none" or (c.mode == "prompted" and (c.prompts_from == "seg" or any(k is not None for k in self.prompt_classes)))
        if makes_classes and seg_maps is None:
            seg_maps = np.full((n, h, w), c.background, np.int64)
        for i in range(n):
            emb = embeddings[i : i + 1]
            found = getattr(self, f"_{c.mode}")(emb, batch, i, h, w)
            masks = [f.pop("mask") for f in found]
            if len(masks) > 65535:
                raise UsageError(f"sample {batch.keys[i]}: {len(masks)} instances do not fit a 16-bit inst.png")
            inst_maps[i] = R.paint(masks, (h, w))
            if makes_classes:
                seg_maps[i] = self._classes_map(seg_maps[i], masks, found, c.mode == "refine")
            rec = batch.records[i]
            for j, f in enumerate(found, start=1):
                f["id"] = j
                f["class_name"] = self.classes[f["class"]] if f.get("class") is not None and self.classes else None
            rec["instances"] = [{k: f.get(k) for k in ("id", "class", "class_name", "bbox", "area", "predicted_iou", "stability_score", "kept", "agreement")} for f in found]
            scores = rec.setdefault("scores", {})
            scores["sam_instances"] = len(found)
            if c.mode == "refine":
                agreements = [f["agreement"] for f in found]
                scores["sam_agreement"] = round(float(np.mean(agreements)), 6) if agreements else 1.0
                scores["sam_kept_share"] = round(float(np.mean([f["kept"] == "sam" for f in found])), 6) if found else 0.0
            labels = dict(rec.get("labels") or {})
            if makes_classes and c.mode != "refine":
                labels["by"] = "sam"
            labels["sam"] = {"mode": c.mode, **self.backend.describe()}
            rec["labels"] = labels
        batch.instances = inst_maps
        if seg_maps is not None:
            batch.seg = seg_maps
        return batch

    def _classes_map(self, seg: np.ndarray, masks: list[np.ndarray], found: list[dict], refine: bool) -> np.ndarray:
        """The class map: the labeller's labels where no instance is, instances' classes painted
        largest first (smaller on top). In refine, a region's own pixels are cleared first, so
        the kept mask (SAM's or the head's) alone decides its extent."""
        out = seg.copy()
        if refine:
            for f in found:
                out[f["region"]] = self.config.background
        for m, f in zip(masks, found):
            if f.get("class") is not None:
                out[m] = f["class"]
        for f in found:
            f.pop("region", None)
        return out

    # -- the three modes: each returns [{"mask": bool (h, w), record fields...}], largest first --
    def _decode(self, emb, prompts: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]], h: int, w: int, multimask: bool):
        """Masks for prompts (points (n, 2), labels (n,), box (4,) in sample pixels) of one image:
        (P, h, w) logits, (P,) predicted IoU, the best of three where multimask applies."""
        import torch

        size = self.backend.image_size
        logits = [None] * len(prompts)
        scores = np.zeros(len(prompts), np.float32)
        groups: dict[tuple, list[int]] = {}
        for j, (pts, _, box) in enumerate(prompts):  # prompts of one shape decode together
            groups.setdefault((0 if pts is None else len(pts), box is not None), []).append(j)
        for (npts, has_box), idx in sorted(groups.items()):
            pts = lbl = boxes = None
            if npts:
                pts = torch.from_numpy(np.stack([T.coords_to_input(prompts[j][0], h, w, size) for j in idx]))
                lbl = torch.from_numpy(np.stack([prompts[j][1] for j in idx]).astype(np.int64))
            if has_box:
                boxes = torch.from_numpy(np.stack([T.boxes_to_input(prompts[j][2], h, w, size) for j in idx]))
            multi = multimask and not has_box
            low, iou = self.backend.decode(emb, pts, lbl, boxes, multi)
            full = T.logits_to_image(low, h, w, size, torch).cpu().numpy()
            iou = iou.cpu().numpy()
            best = iou.argmax(1) if multi else np.zeros(len(idx), int)
            for k, j in enumerate(idx):
                logits[j] = full[k, best[k]]
                scores[j] = iou[k, best[k]]
        return np.stack(logits) if logits else np.zeros((0, h, w), np.float32), scores

    def _instance(self, mask: np.ndarray, logits: np.ndarray, iou: float, cls: int | None, **extra) -> dict:
        stab = R.stability_score(logits[None], self.config.stability_score_offset)[0]
        return {"mask": mask, "bbox": R.box_xywh(mask), "area": int(mask.sum()), "predicted_iou": round(float(iou), 6), "stability_score": round(float(stab), 6), "class": cls, "kept": "sam", "agreement": None, **extra}

    def _auto(self, emb, batch: Batch, i: int, h: int, w: int) -> list[dict]:
        import torch

        c, size = self.config, self.backend.image_size
        grid = (np.arange(c.points_per_side) + 0.5) / c.points_per_side
        points = np.array([(x * w, y * h) for y in grid for x in grid], np.float32)
        masks, ious, stabs = [], [], []
        for s in range(0, len(points), c.points_per_batch):  # filtered per batch: bounded memory
            chunk = T.coords_to_input(points[s : s + c.points_per_batch, None, :], h, w, size)
            low, iou = self.backend.decode(emb, torch.from_numpy(chunk), torch.ones(len(chunk), 1, dtype=torch.int64), None, True)
            logits = T.logits_to_image(low.flatten(0, 1)[:, None], h, w, size, torch)[:, 0].cpu().numpy()
            iou = iou.flatten().cpu().numpy()
            stab = R.stability_score(logits, c.stability_score_offset)
            binary = logits > 0
            keep = (iou > c.pred_iou_thresh) & (stab >= c.stability_score_thresh) & binary.reshape(len(binary), -1).any(1)
            masks += list(binary[keep])
            ious += list(iou[keep])
            stabs += list(stab[keep])
        order = R.nms(np.array(masks), np.array(ious), c.box_nms_thresh) if masks else []
        found = [(masks[k], ious[k], stabs[k]) for k in order]
        if c.min_mask_region_area > 0 and found:
            cleaned = [(R.remove_small(m, c.min_mask_region_area), q, st) for m, q, st in found]
            cleaned = [f for f in cleaned if f[0].sum() >= c.min_mask_region_area]
            order = R.nms(np.array([f[0] for f in cleaned]), np.array([f[1] for f in cleaned]), c.box_nms_thresh) if cleaned else []
            found = [cleaned[k] for k in order]
        found.sort(key=lambda f: (-int(f[0].sum()), -float(f[1])))
        out = []
        for m, q, st in found:
            out.append({"mask": m, "bbox": R.box_xywh(m), "area": int(m.sum()), "predicted_iou": round(float(q), 6), "stability_score": round(float(st), 6), "class": self._assigned(batch, i, m), "kept": "sam", "agreement": None})
        return out

    def _assigned(self, batch: Batch, i: int, mask: np.ndarray) -> int | None:
        how = self.config.classes_from
        if how == "seg":
            votes = np.bincount(np.asarray(batch.seg[i])[mask].astype(np.int64))
            return int(votes.argmax()) if len(votes) else None
        if how == "sample":
            cls = batch.records[i].get("class")
            if cls is None:
                raise UsageError(f"sample {batch.keys[i]}: classes_from = 'sample' but the sample has no class")
            return int(cls)
        return None

    def _prompts_of(self, batch: Batch, i: int, h: int, w: int) -> list[tuple[Prompt, int | None, np.ndarray | None]]:
        c = self.config
        if c.prompts_from == "manifest":
            out = [(p, k, None) for p, k in zip(c.prompts, self.prompt_classes)]
        elif c.prompts_from == "seg":
            return self._prompts_of_regions(batch, i)
        else:
            value: Any = batch.records[i]
            for part in c.record_field.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                raise UsageError(f"sample {batch.keys[i]}: no {c.record_field!r} in its record (prompts_from = 'record')")
            from pydantic import TypeAdapter, ValidationError

            try:
                prompts = TypeAdapter(list[Prompt]).validate_python(value)
            except ValidationError as e:
                err = e.errors()[0]
                raise UsageError(f"sample {batch.keys[i]}: {c.record_field}.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
            out = [(p, _class_id(p.class_, self.classes, f"sample {batch.keys[i]}: {c.record_field}[{j}]"), None) for j, p in enumerate(prompts)]
        for j, (p, _, _) in enumerate(out):
            why = _outside(p, h, w)
            if why:
                where = f"prompts[{j}]" if c.prompts_from == "manifest" else f"{c.record_field}[{j}]"
                raise UsageError(f"sample {batch.keys[i]}: {where}: {why}")
        return out

    def _region_prompt(self, region: np.ndarray) -> Prompt:
        pts = R.interior_points(region, self.config.interior_points)
        return Prompt(box=tuple(float(v) for v in R.box_xyxy(region)), points=[tuple(map(float, p)) for p in pts])

    @staticmethod
    def _as_arrays(p: Prompt):
        pts = np.asarray(p.points, np.float32) if p.points else None
        lbl = np.asarray(p.labels if p.labels is not None else [1] * len(p.points), np.int64) if p.points else None
        box = np.asarray(p.box, np.float32) if p.box is not None else None
        return pts, lbl, box

    def _prompted(self, emb, batch: Batch, i: int, h: int, w: int) -> list[dict]:
        prompts = self._prompts_of(batch, i, h, w)
        logits, ious = self._decode(emb, [self._as_arrays(p) for p, _, _ in prompts], h, w, self.config.multimask)
        out = []
        for (p, cls, _), lg, q in zip(prompts, logits, ious):
            m = lg > 0
            if cls is None and self.config.classes_from != "none":
                cls = self._assigned(batch, i, m) if m.any() or self.config.classes_from == "sample" else None
            out.append(self._instance(m, lg, q, cls))
        out.sort(key=lambda f: -f["area"])  # stable: prompts of equal area keep their order
        return out

    def _refine(self, emb, batch: Batch, i: int, h: int, w: int) -> list[dict]:
        prompts = self._prompts_of_regions(batch, i)
        logits, ious = self._decode(emb, [self._as_arrays(p) for p, _, _ in prompts], h, w, False)
        out = []
        for (p, cls, region), lg, q in zip(prompts, logits, ious):
            m = lg > 0
            agreement = R.iou(m, region)
            kept = "sam" if agreement >= self.config.iou_threshold else "head"
            f = self._instance(m if kept == "sam" else region, lg, q, cls, region=region)
            f["kept"], f["agreement"] = kept, round(agreement, 6)
            out.append(f)
        return out

    def _prompts_of_regions(self, batch: Batch, i: int):
        """A prompt per class region of the earlier labeller's map: its box and interior points."""
        c = self.config
        return [(self._region_prompt(m), cls, m) for cls, m in R.class_regions(np.asarray(batch.seg[i]), c.background, c.min_region_area)]
