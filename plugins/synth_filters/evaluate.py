"""`synth evaluate`: how good are a manifest's labels on held-out images someone labelled?

The manifest's own labelling stages (every transform after its source, e.g. `pixelhead`) label
the held-out images, and their labels are compared with the held-out masks: per-class IoU and
mIoU (synth.segmetrics, the definition the benches use) over all images, and over the images the
manifest's filters (e.g. `drop_uncertain`) would keep. Expand stages are skipped: they change
what an image shows, so there is nothing to compare them with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from synth.errors import UsageError
from synth.manifest import Manifest, source_step
from synth.pipeline import Pipeline
from synth.segmetrics import class_ious_from, confusion, mean_iou


def labelled_source(path: str, masks: str | None, size: int | None) -> dict[str, Any]:
    """A source-stage table for held-out labelled images: a folder (masks as NAME.seg.png beside
    each image, or ``masks`` = a folder of NAME.png), or synth/WebDataset shards with seg.png."""
    p = Path(path).expanduser()
    table: dict[str, Any]
    if p.suffix == ".tar" or "{" in path:
        table = {"name": "shards", "urls": str(p.resolve()) if p.exists() else path}
    elif p.is_dir() and any(p.glob("*.tar")):
        table = {"name": "shards", "urls": [str(t.resolve()) for t in sorted(p.glob("*.tar")) if not t.name.startswith(".")]}
    else:
        table = {"name": "folder", "path": str(p.resolve()), "masks": str(Path(masks).expanduser().resolve()) if masks else "auto"}
    if size:
        table["size"] = size
    return table


def evaluate(manifest: Manifest, table: dict[str, Any], count: int | None = None, batch_size: int | None = None, quiet: bool = False, threads: int | None = None) -> dict[str, Any]:
    from synth.bars import progress_bar

    classes = list(manifest.dataset.classes)
    k = len(classes)
    if k < 2:
        raise UsageError(f"{manifest.path}: evaluate needs [dataset].classes (the label names)")
    pipeline = Pipeline(manifest, quiet=quiet, threads=threads)
    step = source_step(manifest.registry, dict(table), "--labelled")
    source = step.cls(step.config, pipeline.context)
    source.setup()
    available = source.num_available()
    n = count or available
    if n is None:
        raise UsageError(f"--labelled: source {step.name!r} is endless; give --count")
    if available is not None and n > available:
        raise UsageError(f"--count is {n}, but the labelled source holds {available} images")
    pipeline.setup()
    labellers = [(s, st) for s, st in pipeline.steps[1:] if s.cls.kind in ("transform", "filter")]
    if not any(s.cls.kind == "transform" for s, _ in labellers):
        raise UsageError(f"{manifest.path}: no stage after the source labels anything (add e.g. pixelhead)")

    conf_all = np.zeros((k, k), np.int64)
    conf_kept = np.zeros((k, k), np.int64)
    images = kept_images = 0
    skipped: list[str] = []
    labelled_by = None
    b = batch_size or manifest.run.batch_size
    bar = progress_bar(n, "evaluate", "image", disable=quiet)
    for start in range(0, n, b):
        batch = source.produce(list(range(start, min(start + b, n))))
        skipped += [f"{d.key}: {d.detail or d.reason}" for d in batch.dropped]
        batch.dropped = []
        if len(batch) == 0:
            bar.update(min(b, n - start))
            continue
        if batch.seg is None:
            raise UsageError(f"--labelled: stage {step.name!r} gives images without masks; held-out images need masks")
        truth = np.asarray(batch.seg).astype(np.int64)
        if truth.max(initial=0) >= k:
            raise UsageError(f"--labelled: a mask has class id {int(truth.max())}, [dataset].classes lists {k} classes")
        batch.seg = None  # the labellers must produce their own
        keep = np.ones(len(batch), bool)
        for s, stage in labellers:
            keys = f"held-out images {batch.keys[0]}..{batch.keys[-1]}"
            if s.cls.kind == "transform":
                batch = pipeline._guard(s, keys, lambda: stage.process(batch))
                if batch.seg is not None and labelled_by is None:
                    labelled_by = f"{s.where} {s.name}"
            else:  # a filter: which samples it would keep (all rows stay to be measured)
                survivors = set(pipeline._guard(s, keys, lambda: stage.process(batch.take(range(len(batch))))).keys)
                keep &= np.array([key in survivors for key in batch.keys])
        if batch.seg is None:
            raise UsageError(f"{manifest.path}: no stage after the source labels pixels (seg); nothing to evaluate")
        pred = np.asarray(batch.seg).astype(np.int64)
        if pred.shape != truth.shape:
            raise UsageError(f"labels are {pred.shape[1:]} pixels, held-out masks {truth.shape[1:]}; give --size to match the generator")
        conf_all += confusion(pred, truth, k)
        conf_kept += confusion(pred[keep], truth[keep], k)
        images += len(truth)
        kept_images += int(keep.sum())
        bar.update(min(b, n - start))
    bar.close()
    if images == 0:
        raise UsageError(f"--labelled: no usable labelled image (skipped: {skipped[0] if skipped else 'none'})")

    def report(conf, count):
        ious = class_ious_from(conf)
        total = conf.sum()
        return {
            "images": count,
            "iou": {c: (None if np.isnan(v) else round(v, 6)) for c, v in zip(classes, ious)},
            "miou": round(mean_iou(ious), 6),
            "pixel_accuracy": round(float(np.trace(conf) / total), 6) if total else None,
        }

    out = {"manifest": str(manifest.path), "labelled": table, "labelled_by": labelled_by, "classes": classes, **report(conf_all, images), "skipped": skipped}
    if any(s.cls.kind == "filter" for s, _ in labellers):
        out["kept_by_filters"] = report(conf_kept, kept_images)
    return out


def format_evaluation(r: dict[str, Any]) -> str:
    lines = [f"{r['images']} held-out images labelled by {r['labelled_by']} ({r['manifest']})"]
    width = max(len(c) for c in r["classes"])
    kept = r.get("kept_by_filters")
    head = f"  {'class':<{width}}  IoU" + (f"    IoU on the {kept['images']} kept by filters" if kept else "")
    lines.append(head)
    for c in r["classes"]:
        v = r["iou"][c]
        row = f"  {c:<{width}}  {'-' if v is None else f'{v:.3f}'}"
        if kept:
            kv = kept["iou"][c]
            row += f"    {'-' if kv is None else f'{kv:.3f}'}"
        lines.append(row)
    lines.append(f"mIoU {r['miou']:.3f}, pixel accuracy {r['pixel_accuracy']:.3f}" + (f"; kept by filters: mIoU {kept['miou']:.3f} on {kept['images']} images" if kept and kept["images"] else ""))
    if r["skipped"]:
        lines.append(f"skipped {len(r['skipped'])}: e.g. {r['skipped'][0]}")
    return "\n".join(lines)
