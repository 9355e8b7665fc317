"""`synth report OUTPUT`: one self-contained HTML page (and a markdown twin) that shows where a
dataset stands, as a reader goes through it: what it is (summary, the generator as a table), a
sample grid with labels beside the images, its classes (per-class pixel shares for segmentation
labels, with a legend in the dataset's palette; samples per class for class labels), every
score's histogram over all samples, kept and dropped, with each threshold the filters used
marked, what stages calibrated (the view radius curve of sigma = "auto", the thresholds), the
metrics, and the dropped samples grouped by reason with thumbnails. PIL draws the charts; the
HTML embeds them (no network, no JavaScript).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from synth.figures import cell, columns
from synth.reading import iter_samples, read_dataset_info

MAX_ROWS = 20000  # samples whose scores and labels feed the charts (said on the page when capped)
KEPT, DROPPED, MARK = (70, 110, 200), (225, 130, 40), (200, 30, 30)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def histogram(kept: list[float], dropped: list[float], title: str, marks: dict[str, float], width: int = 460, height: int = 220) -> Image.Image:
    """Kept and dropped samples' values stacked in one histogram, each threshold a labelled line
    (labels stay inside the plot, left of their line near the right edge)."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    pad, top_pad = 34, 34
    d.text((pad, 4), title, fill="black")
    values = kept + dropped
    if not values:
        d.text((pad, height // 2), "no values", fill="gray")
        return img
    lo, hi = float(min(values + list(marks.values()))), float(max(values + list(marks.values())))
    span = hi - lo if hi > lo else 1.0
    lo, hi = lo - 0.03 * span, hi + 0.03 * span  # a threshold at an end stays off the axis line
    k, _ = np.histogram(kept, bins=30, range=(lo, hi))
    dr, _ = np.histogram(dropped, bins=30, range=(lo, hi))
    most = max(int((k + dr).max()), 1)
    bw = (width - 2 * pad) / len(k)
    base = height - pad
    scale = (height - pad - top_pad) / most
    for i in range(len(k)):
        x0 = pad + i * bw
        y_kept = base - k[i] * scale
        d.rectangle([x0, y_kept, x0 + bw - 1, base], fill=KEPT)
        if dr[i]:
            d.rectangle([x0, y_kept - dr[i] * scale, x0 + bw - 1, y_kept], fill=DROPPED)
    d.line([(pad, base), (width - pad, base)], fill="black")
    d.text((pad, base + 4), f"{lo:.3g}", fill="black")
    d.text((width - pad - 40, base + 4), f"{hi:.3g}", fill="black")
    d.rectangle([width - 150, 6, width - 140, 16], fill=KEPT)
    d.text((width - 136, 5), f"kept {len(kept)}", fill="black")
    d.rectangle([width - 78, 6, width - 68, 16], fill=DROPPED)
    d.text((width - 64, 5), f"dropped {len(dropped)}", fill="black")
    for j, (name, v) in enumerate(sorted(marks.items(), key=lambda kv: kv[1])):
        x = pad + (v - lo) / (hi - lo) * (width - 2 * pad)
        d.line([(x, top_pad - 6), (x, base)], fill=MARK, width=2)
        label = f"{name} = {v:.3g}"
        tw = d.textlength(label)
        tx = x + 4 if x + 4 + tw < width - 4 else x - 4 - tw
        d.text((tx, top_pad - 6 + 12 * j), label, fill=MARK)
    return img


def bars(values: dict[str, float], title: str, colours: list[tuple[int, int, int]] | None = None, as_share: bool = False, width: int = 460, height: int = 220) -> Image.Image:
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 4), title, fill="black")
    if not values:
        d.text((10, height // 2), "no classes", fill="gray")
        return img
    top = max(values.values()) or 1
    bw = (width - 40) / len(values)
    for i, (name, c) in enumerate(values.items()):
        x0 = 20 + i * bw
        y0 = height - 40 - c / top * (height - 74)
        fill = tuple(colours[i]) if colours and i < len(colours) else (60, 160, 90)
        d.rectangle([x0 + 4, y0, x0 + bw - 4, height - 40], fill=fill, outline=(90, 90, 90))
        d.text((x0 + 4, height - 36), name[:14], fill="black")
        d.text((x0 + 4, y0 - 13), f"{c:.1%}" if as_share else str(int(c)), fill="black")
    return img


def thresholds(info: dict) -> dict[str, dict[str, float]]:
    """Per score, the lines the manifest's filters drew (threshold min/max, realism min, ...)."""
    out: dict[str, dict[str, float]] = {}
    for st in info.get("stages") or []:  # each filter's fixed bounds (Stage.bounds)
        b = st.get("bounds") or {}
        for bound in ("min", "max"):
            if isinstance(b.get("score"), str) and isinstance(b.get(bound), (int, float)):
                out.setdefault(b["score"], {})[f"{st['stage']} {bound}"] = float(b[bound])
    for where, rep in (info.get("reports") or {}).items():  # calibrated thresholds (drop_uncertain)
        if isinstance(rep, dict) and isinstance(rep.get("score"), str) and isinstance(rep.get("threshold"), (int, float)):
            out.setdefault(rep["score"], {})[f"{where} {rep.get('stage', '')}".strip()] = float(rep["threshold"])
    return out


def build(folder: Path, samples: int = 32, cell: int = 96) -> dict[str, Any]:
    """Everything the page shows, read from the output (nothing written here)."""
    folder = Path(folder)
    info = read_dataset_info(folder)
    classes = list(info.get("classes") or [])
    kept: dict[str, list[float]] = {}
    class_counts: Counter = Counter()
    pixels = np.zeros(max(len(classes), 1), np.int64)
    n = capped = 0
    with_seg = False
    for tar in sorted(p for p in folder.glob("*.tar") if not p.name.startswith(".")):
        for s in iter_samples(tar):
            if n >= MAX_ROWS:
                capped += 1
                continue
            n += 1
            rec = json.loads(s.get("json", b"{}"))
            for k, v in (rec.get("scores") or {}).items():
                if isinstance(v, (int, float)):
                    kept.setdefault(k, []).append(float(v))
            if rec.get("class_name") is not None:
                class_counts[rec["class_name"]] += 1
            if "seg.png" in s:
                with_seg = True
                ids = np.asarray(Image.open(io.BytesIO(s["seg.png"]))).ravel()
                counts = np.bincount(ids, minlength=len(pixels))
                if len(counts) > len(pixels):
                    pixels = np.concatenate([pixels, np.zeros(len(counts) - len(pixels), np.int64)])
                pixels[: len(counts)] += counts
    dropped_records = []
    for st in sorted(folder.glob("*.stats.json")):
        dropped_records += json.loads(st.read_text()).get("dropped", [])
    dropped_scores: dict[str, list[float]] = {}
    for d in dropped_records:
        for k, v in (d.get("scores") or {}).items():
            if isinstance(v, (int, float)):
                dropped_scores.setdefault(k, []).append(float(v))
    palette = [tuple(c) for c in info.get("palette") or []]
    names = [classes[i] if i < len(classes) else str(i) for i in range(len(pixels))]
    shares = {names[i]: float(c) / max(int(pixels.sum()), 1) for i, c in enumerate(pixels)} if with_seg else {}
    marks = thresholds(info)
    charts = {}
    for k in sorted(set(kept) | set(dropped_scores)):
        a, b = kept.get(k, []), dropped_scores.get(k, [])
        charts[f"report-score-{k}.png"] = histogram(a, b, f"scores.{k} ({len(a) + len(b)} samples)", marks.get(k, {}))
    if shares:
        charts["report-pixels.png"] = bars(shares, "share of labelled pixels per class", palette, as_share=True)
    ordered = {c: class_counts.get(c, 0) for c in classes} if class_counts else {}
    if ordered:
        charts["report-classes.png"] = bars(ordered, "samples per class", palette)
    return {
        "info": info, "kept": kept, "dropped_scores": dropped_scores, "classes": ordered, "pixel_shares": shares,
        "palette": palette, "dropped": dropped_records, "charts": charts, "rows": n, "capped": capped, "grid_samples": samples, "cell": cell,
    }


def _img_tag(data: bytes, alt: str, ident: str = "", css: str = "") -> str:
    b64 = base64.b64encode(data).decode()
    attrs = (f'id="{ident}" ' if ident else "") + (f'class="{css}" ' if css else "")
    return f'<img {attrs}alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _swatch(rgb) -> str:
    return f'<span class=swatch style="background:rgb({int(rgb[0])},{int(rgb[1])},{int(rgb[2])})"></span>'


def _generator_rows(generator: dict | None) -> list[str]:
    if not generator:
        return ["<tr><td colspan=2>no generator (real images)</td></tr>"]
    rows = []
    for k, v in sorted(generator.items()):
        text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
        rows.append(f"<tr><th>{html.escape(k)}</th><td>{html.escape(text)}</td></tr>")
    return rows


def _dropped_groups(dropped: list[dict]) -> list[dict]:
    """Drops by (stage, reason): count, a few thumbnails and example details, largest first."""
    groups: dict[tuple[str, str], dict] = {}
    for d in dropped:
        g = groups.setdefault((d["stage"], d["reason"]), {"stage": d["stage"], "reason": d["reason"], "count": 0, "thumbnails": [], "examples": []})
        g["count"] += 1
        if d.get("thumbnail") and len(g["thumbnails"]) < 8:
            g["thumbnails"].append((d["key"], d["thumbnail"]))
        if len(g["examples"]) < 3:
            g["examples"].append(f"{d['key']}: {d.get('detail') or d['reason']}")
    return sorted(groups.values(), key=lambda g: -g["count"])


def _calibration(info: dict, folder: Path) -> list[str]:
    """What stages decided at set-up: facts, and their pictures (the sigma curve)."""
    parts = []
    classes = info.get("classes") or []
    for where, rep in sorted((info.get("reports") or {}).items()):
        if not isinstance(rep, dict):
            continue
        facts = []
        if "threshold" in rep and "score" in rep:
            facts.append(f"drops <code>{html.escape(rep['score'])}</code> above {rep['threshold']:.4g}")
        if "radius" in rep:
            missed = rep.get("missed") or {}
            name = lambda k: classes[int(k)] if str(k).isdigit() and int(k) < len(classes) else k  # noqa: E731
            facts.append(
                f"view radius per class (target agreement {rep.get('target', 0):.0%}): "
                + ", ".join(f"{html.escape(str(name(k)))} {v:g}" + (f" <b>(target not met: best {missed[k]:.0%})</b>" if k in missed else "") for k, v in rep["radius"].items())
            )
        if isinstance(rep.get("calibration"), dict):
            facts.append("calibrated on labelled images: " + html.escape(json.dumps(rep["calibration"], sort_keys=True)))
        if not facts:
            facts.append(html.escape(json.dumps({k: v for k, v in rep.items() if k not in ("files", "curve", "stage")}, sort_keys=True, default=str))[:400])
        parts.append(f"<h3>{html.escape(where)} <code>{html.escape(str(rep.get('stage', '')))}</code></h3><p>" + "; ".join(facts) + "</p>")
        for fname in rep.get("files") or []:
            path = folder / fname
            if path.is_file() and fname.endswith(".png"):
                ident = "sigma-curve" if "sigma_auto" in fname else fname[:-4]
                parts.append(_img_tag(path.read_bytes(), fname, ident))
    return parts


STYLE = (
    "body{font-family:sans-serif;margin:24px;max-width:1120px;color:#222}table{border-collapse:collapse;margin:6px 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}img{max-width:100%}"
    "section{margin-bottom:30px}.swatch{display:inline-block;width:14px;height:14px;border:1px solid #555;margin-right:6px;vertical-align:middle}"
    ".legend span.item{margin-right:16px;white-space:nowrap}.thumb{width:48px;height:48px;image-rendering:pixelated;margin:2px;border:1px solid #ccc}"
    ".charts img{margin:4px}.note{color:#666;font-size:90%}tr.best td{background:#e6f4ea;font-weight:bold}tr.this td{background:#fff4d6}"
)


def write(folder: Path, samples: int = 32) -> tuple[Path, Path]:
    """report.html, report.md and their pictures beside the shards (recorded as synth's own)."""
    from synth.inspect import contact_sheet

    folder = Path(folder)
    r = build(folder, samples)
    info = r["info"]
    grid_path = folder / "report-grid.png"
    if info.get("num_samples"):
        contact_sheet(folder, grid_path, count=samples, columns=8, cell=r["cell"])
    for name, img in r["charts"].items():
        (folder / name).write_bytes(_png(img))
    r["sections"] = plugin_sections(folder)
    page = folder / "report.html"
    page.write_text(_html(r, folder, grid_path if grid_path.exists() else None), encoding="utf-8")
    twin = folder / "report.md"
    twin.write_text(_markdown(r, grid_path.exists()), encoding="utf-8")
    from synth.output import OutputFolder
    from synth.storage import LocalStore

    OutputFolder(LocalStore(folder), info["name"]).record_extra(["report.html", "report.md", "report-grid.png", *r["charts"]])
    return page, twin


def plugin_sections(folder: Path) -> list[tuple[str, str, str, str]]:
    """(name, title, html, markdown) of every registered report section with something to say
    about this output (register_report_sections), in name order."""
    from synth.plugins import load_registry

    out = []
    for name, cls in sorted(load_registry().report_sections.items()):
        got = cls.render(folder)
        if got is not None:
            out.append((name, cls.title or name, got[0], got[1]))
    return out


def _html(r: dict, folder: Path, grid: Path | None) -> str:
    info, esc = r["info"], html.escape
    metrics = info.get("metrics") or {}
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>synth report: {esc(info['name'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(info['name'])}</h1>",
        "<section id=summary><h2>Summary</h2><table>",
        f"<tr><th>samples</th><td id=num-samples>{info['num_samples']}</td></tr>",
        f"<tr><th>source samples</th><td>{info.get('num_source_samples')}</td></tr>",
        f"<tr><th>dropped</th><td id=num-dropped>{info.get('num_dropped', 0)}</td></tr>",
        f"<tr><th>shards</th><td>{len(info.get('shards', []))}</td></tr>",
        f"<tr><th>fields</th><td>{esc(', '.join(info.get('fields') or []))}</td></tr>",
        f"<tr><th>manifest</th><td>{esc(info['manifest']['file'])} (sha256 {esc(info['manifest']['sha256'][:16])})</td></tr>",
        "</table><h3>Generator</h3><table id=generator>",
        *_generator_rows(info.get("generator")),
        "</table></section>",
        "<section id=grid><h2>Samples</h2>",
        _img_tag(grid.read_bytes(), "sample grid", "sample-grid") if grid else "<p>no samples</p>",
        "</section>",
        "<section id=classes><h2>Classes</h2>",
    ]
    classes, palette = list(info.get("classes") or []), r["palette"]
    if classes:
        parts.append("<p class=legend id=legend>" + "".join(f"<span class=item>{_swatch(palette[i]) if i < len(palette) else ''}{esc(c)}</span>" for i, c in enumerate(classes)) + "</p>")
    if r["pixel_shares"]:
        parts.append(_img_tag(_png(r["charts"]["report-pixels.png"]), "pixel share per class", "pixel-shares"))
        parts.append("<table id=pixel-share-table><tr><th>class</th><th>share of labelled pixels</th></tr>"
                     + "".join(f"<tr><td>{esc(c)}</td><td>{v:.2%}</td></tr>" for c, v in r["pixel_shares"].items()) + "</table>")
    if r["classes"]:
        parts.append(_img_tag(_png(r["charts"]["report-classes.png"]), "samples per class", "class-histogram"))
    if not r["pixel_shares"] and not r["classes"]:
        parts.append("<p>no class labels (no seg.png, no class)</p>")
    parts.append("</section><section id=scores><h2>Scores</h2><p class=note>Every sample, kept (blue) and dropped (orange); red lines: the thresholds the filters used.</p><div class=charts>")
    for name, img in r["charts"].items():
        if name.startswith("report-score-"):
            parts.append(_img_tag(_png(img), name, name[:-4]))
    if not any(n.startswith("report-score-") for n in r["charts"]):
        parts.append("<p>no scores</p>")
    parts.append("</div>")
    if r["capped"]:
        parts.append(f"<p class=note>Charts from the first {r['rows']} samples ({r['capped']} more not read).</p>")
    parts.append("</section><section id=calibration><h2>What stages calibrated</h2>")
    parts += _calibration(info, folder) or ["<p>nothing (no stage calibrated at set-up)</p>"]
    parts.append("</section><section id=metrics><h2>Metrics</h2>")
    if metrics:
        shown = columns(metrics)
        parts.append("<table><tr><th>stage</th>" + "".join(f"<th>{esc(label)}</th>" for _, label in shown) + "<th>reference</th></tr>")
        for where, m in sorted(metrics.items()):
            parts.append(f"<tr><td>{esc(where)}</td>" + "".join(f"<td class=metric-{esc(k)}>{cell(m, k)}</td>" for k, _ in shown)
                         + f"<td>{esc(json.dumps((m.get('reference') or {}).get('source'), sort_keys=True))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No metrics stage ran (add <code>metrics</code> with a reference set to the manifest).</p>")
    keep = [s for s in info.get("stages", []) if "keep_rate" in s]
    if keep:
        parts.append("<p>Keep rate per filter: " + ", ".join(f"{esc(s['stage'])} <code>{esc(s['name'])}</code> {s['keep_rate']:.1%}" for s in keep) + "</p>")
    for name, title, body, _ in r.get("sections", []):
        parts.append(f"</section><section id=section-{esc(name)}><h2>{esc(title)}</h2>{body}")
    groups = _dropped_groups(r["dropped"])
    parts.append(f"</section><section id=dropped><h2>Dropped samples ({len(r['dropped'])})</h2>")
    if groups:
        parts.append("<table id=dropped-groups><tr><th>stage</th><th>reason</th><th>samples</th><th>some of them</th></tr>")
        for g in groups:
            thumbs = "".join(_img_tag(base64.b64decode(t), k, css="thumb") for k, t in g["thumbnails"])
            examples = "<br>".join(esc(e) for e in g["examples"])
            parts.append(f"<tr class=drop-group><td>{esc(g['stage'])}</td><td>{esc(g['reason'])}</td><td>{g['count']}</td><td>{thumbs}<div class=note>{examples}</div></td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    parts.append("</section></body></html>")
    return "\n".join(parts)


def _markdown(r: dict, grid: bool) -> str:
    info = r["info"]
    metrics = info.get("metrics") or {}
    md = [f"# {info['name']}", "", f"{info['num_samples']} samples, {info.get('num_dropped', 0)} dropped, {len(info.get('shards', []))} shards.", ""]
    if grid:
        md += ["![samples](report-grid.png)", ""]
    if r["pixel_shares"]:
        md += ["| class | share of labelled pixels |", "| --- | --- |"] + [f"| {c} | {v:.2%} |" for c, v in r["pixel_shares"].items()] + [""]
    if metrics:
        shown = columns(metrics)
        md += ["| stage | " + " | ".join(label for _, label in shown) + " |", "| --- |" + " --- |" * len(shown)]
        for where, m in sorted(metrics.items()):
            md.append(f"| {where} | " + " | ".join(cell(m, k) for k, _ in shown) + " |")
        md.append("")
    md += [f"![{n}]({n})" for n in r["charts"]] + [""]
    for _, _, _, text in r.get("sections", []):
        md += [text, ""]
    md += ["## Dropped", ""]
    md += [f"- {g['stage']}: {g['reason']} ({g['count']} samples; e.g. {'; '.join(g['examples'])})" for g in _dropped_groups(r["dropped"])] or ["none"]
    return "\n".join(md) + "\n"
