"""dataset.json and the README dataset card written beside the shards after a run."""

from __future__ import annotations

import colorsys
import json
import platform
from collections import Counter
from typing import Any

from . import __version__
from .figures import cell, figures
from .manifest import Manifest
from .protocols import DatasetStage


def palette(n: int) -> list[list[int]]:
    """A fixed colour per class id; id 0 (usually background) is black."""
    out = [[0, 0, 0]]
    for i in range(1, n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
        out.append([int(r * 255), int(g * 255), int(b * 255)])
    return out[:n]


def library_versions() -> dict[str, str]:
    """Versions of every library synth-data requires, its extras' included, that is installed
    (whether or not this process imported it: the driver of a cluster run imports no model
    library, and dataset.json must not depend on which process wrote it). The test extra's
    libraries make no data and are left out."""
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    from .plugins import CORE_DISTRIBUTION

    out = {"synth": __version__, "python": platform.python_version()}
    try:
        wanted = requires(CORE_DISTRIBUTION) or []
    except PackageNotFoundError:  # run from a source tree that is not installed
        wanted = []
    names = set()
    for req in wanted:
        if re.search(r"extra\s*==\s*['\"]test['\"]", req):
            continue
        names.add(re.split(r"[\s\[<>=!~;]", req, 1)[0].lower())
    for dist in sorted(names):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def dataset_json(manifest: Manifest, shard_stats: list[dict], generator: dict | None, fields: list[str]) -> dict[str, Any]:
    dropped = Counter()
    for st in shard_stats:
        for d in st.get("dropped", []):
            dropped[f"{d['stage']}: {d['reason']}"] += 1
    classes = list(manifest.dataset.classes)
    return {
        "name": manifest.dataset.name,
        "num_samples": sum(st["count"] for st in shard_stats),
        "num_source_samples": manifest.dataset.num_samples,
        "num_dropped": sum(dropped.values()),
        "dropped_by_reason": dict(sorted(dropped.items())),
        "fields": fields,
        "image_format": manifest.dataset.image_format,
        "classes": classes,
        "palette": [list(c) for c in manifest.dataset.palette] if manifest.dataset.palette else palette(len(classes)),
        "stages": _stage_rows(manifest, shard_stats),
        "shards": [
            {"file": st["file"], "count": st["count"], "sha256": st["sha256"], "num_dropped": len(st.get("dropped", []))}
            for st in shard_stats
        ],
        "generator": generator,
        "manifest": {
            "file": manifest.path.name,
            "sha256": manifest.hash,
            "identity": manifest.identity(),
            "text": manifest.text,
        },
        "plugins": manifest.registry.versions(),
        "versions": library_versions(),
    }


def _stage_rows(manifest: Manifest, shard_stats: list[dict]) -> list[dict[str, Any]]:
    """Rows in and out of every per-sample stage over all shards: a filter's keep rate."""
    out = []
    for step in manifest.stages:
        rows = [st.get("stage_rows", {}).get(step.where) for st in shard_stats]
        if issubclass(step.cls, DatasetStage) and not any(rows):
            continue  # a measuring stage: its numbers are under "metrics"
        entry = {"stage": step.where, "name": step.name, "kind": step.cls.kind}
        bounds = step.cls.bounds(step.config)
        if bounds:
            entry["bounds"] = bounds
        if all(r is not None for r in rows):
            entry["rows_in"], entry["rows_out"] = sum(r[0] for r in rows), sum(r[1] for r in rows)
            if step.cls.kind in ("filter", "dataset") and entry["rows_in"]:
                entry["keep_rate"] = round(entry["rows_out"] / entry["rows_in"], 6)
        out.append(entry)
    return out


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def readme_card(manifest: Manifest, info: dict[str, Any]) -> str:
    gen = info.get("generator") or {}
    license_ = manifest.dataset.license or gen.get("license") or "other"
    has_seg = "seg.png" in info["fields"]
    tasks = ["image-segmentation"] if has_seg else (["image-classification"] if "cls" in info["fields"] else ["unconditional-image-generation"])
    header = [
        "---",
        f"license: {license_}",
        "annotations_creators:",
        "- machine-generated",
        "source_datasets:",
        "- original",
        "task_categories:",
        *[f"- {t}" for t in tasks],
        "size_categories:",
        f"- {_size_category(info['num_samples'])}",
        "tags:",
        "- synthetic",
        "- synth",
        "- webdataset",
        "---",
    ]
    shards = info["shards"]
    pattern = (
        f"{manifest.dataset.name}-{{000000..{len(shards) - 1:06d}}}.tar" if shards else "(no shards)"
    )
    classes = ", ".join(f"{i}: {c}" for i, c in enumerate(info["classes"])) or "none"
    dropped = "\n".join(f"- {k}: {v}" for k, v in info["dropped_by_reason"].items()) or "- none"
    body = f"""
# {manifest.dataset.name}

Synthetic images made by synth {info['versions']['synth']} (the Python distribution `synth-data`) from the
manifest `{manifest.path.name}` (sha256 `{manifest.hash[:16]}`, full text in `dataset.json`).
Every label here is machine-generated: nothing was annotated by hand.

- Samples: {info['num_samples']} in {len(shards)} shards (`{pattern}`)
- Source samples: {info['num_source_samples']}, dropped by filters: {info['num_dropped']}
- Fields per sample: {', '.join(info['fields'])}
- Classes: {classes}
- Generator: `{gen.get('name', 'none')}` {json.dumps({k: v for k, v in gen.items() if k != 'name'}, sort_keys=True)}
- Licence of the generator: {gen.get('license', 'unknown')}

## How it was made

Each sample's randomness derives only from (manifest seed {manifest.dataset.seed}, sample index, op),
so rerunning the manifest reproduces every shard byte for byte. Stages, in order:

{chr(10).join(f"1. `{s.name}` ({s.cls.kind})" for s in manifest.stages)}

Dropped samples, by stage and reason:

{dropped}
{_reports_section(info)}{_metrics_section(info)}
## Reading it

{reading_snippet(pattern, has_seg, info.get("image_format", "png"))}
"""
    return "\n".join(header) + "\n" + body


def _metrics_section(info: dict[str, Any]) -> str:
    metrics = info.get("metrics") or {}
    if not metrics:
        return ""
    lines = ["", "## Fidelity and diversity", ""]
    for where, m in sorted(metrics.items()):
        ref = m.get("reference", {})
        lines.append(f"Against {ref.get('samples', '?')} reference images ({json.dumps(ref.get('source'), sort_keys=True)}), features `{json.dumps(m.get('extractor'), sort_keys=True)}`, {m.get('samples')} samples:")
        lines.append("")
        shown = figures(m)
        lines.append("| " + " | ".join(label for _, label in shown) + " |")
        lines.append("|" + " --- |" * len(shown))
        lines.append("| " + " | ".join(cell(m, k) for k, _ in shown) + " |")
        if m.get("class_balance"):
            lines.append("")
            lines.append("Class balance: " + ", ".join(f"{c} {n}" for c, n in m["class_balance"].items()))
    keep = [s for s in info.get("stages", []) if "keep_rate" in s]
    if keep:
        lines.append("")
        lines.append("Keep rate per filter: " + ", ".join(f"{s['stage']} `{s['name']}` {s['keep_rate']:.1%}" for s in keep))
    return "\n".join(lines) + "\n"


def _reports_section(info: dict[str, Any]) -> str:
    """What stages decided while setting up (e.g. the view radii sigma = "auto" chose)."""
    reports = info.get("reports") or {}
    if not reports:
        return ""
    classes = info.get("classes") or []
    lines = ["", "## What stages calibrated", ""]
    for where, rep in sorted(reports.items()):
        facts = []
        if "threshold" in rep and "score" in rep:
            facts.append(f"drops {rep['score']} above {rep['threshold']:g}" + (f" (the {1 - rep['fraction']:.0%} quantile of its calibration)" if rep.get("fraction") else ""))
        if "radius" in rep:
            name = lambda k: classes[int(k)] if k.isdigit() and int(k) < len(classes) else k  # noqa: E731
            missed = rep.get("missed") or {}
            facts.append(
                "view radius per class (sigma = \"auto\", target agreement " + f"{rep.get('target', 0):.0%}): "
                + ", ".join(f"{name(k)} {v:g}" + (f" (target not met: best {missed[k]:.0%})" if k in missed else "") for k, v in rep["radius"].items())
            )
        lines.append(f"- {where} `{rep.get('stage', '?')}`: " + ("; ".join(facts) or json.dumps({k: v for k, v in rep.items() if k not in ('files', 'curve')}, sort_keys=True)))
        lines += [f"  ![{f}]({f})" for f in rep.get("files", [])]
    return "\n".join(lines) + "\n"


def reading_snippet(pattern: str, has_seg: bool, image_format: str = "png") -> str:
    """The card's reading code. seg.png gets its own handler *before* the image decoder, which
    would otherwise turn its class ids into RGB values (as the README explains)."""
    if not has_seg:
        return f"""```python
import webdataset as wds
ds = wds.WebDataset("{pattern}", shardshuffle=False).decode("rgb8").to_tuple("{image_format}", "json")
```"""
    return f"""```python
import io
import numpy as np
import webdataset as wds
from PIL import Image

def seg_ids(key, data):
    # class ids stay ids: decode seg.png before the generic image decoder sees it
    if key.endswith("seg.png"):
        return np.asarray(Image.open(io.BytesIO(data)))

ds = wds.WebDataset("{pattern}", shardshuffle=False).decode(seg_ids, "rgb8").to_tuple("{image_format}", "seg.png", "json")
```"""
