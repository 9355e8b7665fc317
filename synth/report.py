"""`synth report OUTPUT`: one self-contained HTML page (and a markdown twin) that shows where a
dataset stands: a sample grid with labels beside the images, the metrics, the class histogram,
every score's histogram with the thresholds the manifest's filters used, and the dropped samples
with their reasons. PIL draws the charts; the HTML embeds them (no network, no JavaScript).
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

from .errors import UsageError
from .reading import iter_samples, read_dataset_info

MAX_ROWS = 20000  # samples whose scores feed the histograms (said on the page when capped)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def histogram(values: list[float], title: str, marks: dict[str, float], width: int = 420, height: int = 200) -> Image.Image:
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    pad = 30
    d.text((pad, 4), title, fill="black")
    if not values:
        d.text((pad, height // 2), "no values", fill="gray")
        return img
    lo, hi = float(min(values + list(marks.values()))), float(max(values + list(marks.values())))
    hi = hi if hi > lo else lo + 1
    counts, edges = np.histogram(values, bins=30, range=(lo, hi))
    top = counts.max() or 1
    bw = (width - 2 * pad) / len(counts)
    for i, c in enumerate(counts):
        x0 = pad + i * bw
        y0 = height - pad - c / top * (height - 2 * pad - 10)
        d.rectangle([x0, y0, x0 + bw - 1, height - pad], fill=(70, 110, 200))
    d.line([(pad, height - pad), (width - pad, height - pad)], fill="black")
    d.text((pad, height - pad + 4), f"{lo:.3g}", fill="black")
    d.text((width - pad - 40, height - pad + 4), f"{hi:.3g}", fill="black")
    for name, v in marks.items():
        x = pad + (v - lo) / (hi - lo) * (width - 2 * pad)
        d.line([(x, 18), (x, height - pad)], fill=(210, 40, 40), width=2)
        d.text((min(x + 3, width - 90), 18), name, fill=(210, 40, 40))
    return img


def bars(counts: dict[str, int], title: str, width: int = 420, height: int = 200) -> Image.Image:
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 4), title, fill="black")
    if not counts:
        d.text((10, height // 2), "no classes", fill="gray")
        return img
    top = max(counts.values()) or 1
    bw = (width - 40) / len(counts)
    for i, (name, c) in enumerate(counts.items()):
        x0 = 20 + i * bw
        y0 = height - 40 - c / top * (height - 70)
        d.rectangle([x0 + 4, y0, x0 + bw - 4, height - 40], fill=(60, 160, 90))
        d.text((x0 + 4, height - 36), name[:12], fill="black")
        d.text((x0 + 4, y0 - 12), str(c), fill="black")
    return img


def thresholds(info: dict) -> dict[str, dict[str, float]]:
    """Per score, the lines the manifest's filters drew (threshold min/max, realism min, ...)."""
    out: dict[str, dict[str, float]] = {}
    stages = (info.get("manifest") or {}).get("identity", {}).get("stages", [])
    for i, st in enumerate(stages):
        name = st.get("name")
        score = {"threshold": st.get("score"), "realism": "realism", "clip_score": "clip_score"}.get(name)
        for bound in ("min", "max"):
            if score and isinstance(st.get(bound), (int, float)):
                out.setdefault(score, {})[f"stage[{i}] {bound}"] = float(st[bound])
    for where, rep in (info.get("reports") or {}).items():  # calibrated thresholds (drop_uncertain)
        if isinstance(rep.get("score"), str) and isinstance(rep.get("threshold"), (int, float)):
            out.setdefault(rep["score"], {})[f"{where} {rep.get('stage', '')}".strip()] = float(rep["threshold"])
    return out


def build(folder: Path, samples: int = 32, cell: int = 96) -> dict[str, Any]:
    from .inspect import contact_sheet

    folder = Path(folder)
    info = read_dataset_info(folder)
    scores: dict[str, list[float]] = {}
    classes: Counter = Counter()
    n = capped = 0
    for tar in sorted(p for p in folder.glob("*.tar") if not p.name.startswith(".")):
        for s in iter_samples(tar):
            if n >= MAX_ROWS:
                capped += 1
                continue
            n += 1
            rec = json.loads(s.get("json", b"{}"))
            for k, v in (rec.get("scores") or {}).items():
                if isinstance(v, (int, float)):
                    scores.setdefault(k, []).append(float(v))
            if rec.get("class_name") is not None:
                classes[rec["class_name"]] += 1
    dropped = []
    for st in sorted(folder.glob("*.stats.json")):
        for d in json.loads(st.read_text()).get("dropped", []):
            dropped.append(d)
    grid_path = folder / "report-grid.png"
    if info.get("num_samples"):
        contact_sheet(folder, grid_path, count=samples, columns=8, cell=cell)
    marks = thresholds(info)
    charts = {f"report-score-{k}.png": histogram(v, f"scores.{k} ({len(v)} samples)", marks.get(k, {})) for k, v in sorted(scores.items())}
    ordered = {c: classes.get(c, 0) for c in info.get("classes", [])} or dict(classes)
    if classes:
        charts["report-classes.png"] = bars(ordered, "samples per class")
    return {"info": info, "scores": scores, "classes": ordered, "dropped": dropped, "grid": grid_path if grid_path.exists() else None, "charts": charts, "rows": n, "capped": capped}


def _img_tag(data: bytes, alt: str, ident: str = "") -> str:
    b64 = base64.b64encode(data).decode()
    return f'<img {f"id={ident!r} " if ident else ""}alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def write(folder: Path, samples: int = 32) -> tuple[Path, Path]:
    r = build(folder, samples)
    info, folder = r["info"], Path(folder)
    for name, img in r["charts"].items():
        (folder / name).write_bytes(_png(img))
    metrics = info.get("metrics") or {}
    esc = html.escape
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>synth report: {esc(info['name'])}</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}section{margin-bottom:28px}</style>",
        "</head><body>",
        f"<h1>{esc(info['name'])}</h1>",
        "<section id=summary><h2>Summary</h2><table>",
        f"<tr><th>samples</th><td id=num-samples>{info['num_samples']}</td></tr>",
        f"<tr><th>source samples</th><td>{info.get('num_source_samples')}</td></tr>",
        f"<tr><th>dropped</th><td>{info.get('num_dropped', 0)}</td></tr>",
        f"<tr><th>shards</th><td>{len(info.get('shards', []))}</td></tr>",
        f"<tr><th>generator</th><td>{esc(json.dumps(info.get('generator'), sort_keys=True))}</td></tr>",
        f"<tr><th>manifest</th><td>{esc(info['manifest']['file'])} (sha256 {esc(info['manifest']['sha256'][:16])})</td></tr>",
        "</table></section>",
        "<section id=grid><h2>Samples</h2>",
        _img_tag(r["grid"].read_bytes(), "sample grid", "sample-grid") if r["grid"] else "<p>no samples</p>",
        "</section>",
        "<section id=metrics><h2>Metrics</h2>",
    ]
    if metrics:
        parts.append("<table><tr><th>stage</th><th>FID</th><th>KID</th><th>precision</th><th>recall</th><th>density</th><th>coverage</th><th>reference</th></tr>")
        for where, m in sorted(metrics.items()):
            cell = lambda k: f"{m[k]:.4g}" if isinstance(m.get(k), (int, float)) else "-"  # noqa: E731
            parts.append(f"<tr><td>{esc(where)}</td>" + "".join(f"<td class=metric-{k}>{cell(k)}</td>" for k in ("fid", "kid", "precision", "recall", "density", "coverage"))
                         + f"<td>{esc(json.dumps((m.get('reference') or {}).get('source'), sort_keys=True))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No metrics stage ran (add <code>metrics</code> with a reference set to the manifest).</p>")
    keep = [s for s in info.get("stages", []) if "keep_rate" in s]
    if keep:
        parts.append("<p>Keep rate per filter: " + ", ".join(f"{esc(s['stage'])} <code>{esc(s['name'])}</code> {s['keep_rate']:.1%}" for s in keep) + "</p>")
    parts.append("</section><section id=classes><h2>Classes</h2>")
    parts.append(_img_tag(_png(r["charts"]["report-classes.png"]), "class histogram", "class-histogram") if "report-classes.png" in r["charts"] else "<p>no class labels</p>")
    parts.append("</section><section id=scores><h2>Scores</h2>")
    for name, img in r["charts"].items():
        if name.startswith("report-score-"):
            parts.append(_img_tag(_png(img), name, name[:-4]))
    if r["capped"]:
        parts.append(f"<p>Histograms from the first {r['rows']} samples ({r['capped']} more not read).</p>")
    parts.append(f"</section><section id=dropped><h2>Dropped samples ({len(r['dropped'])})</h2>")
    if r["dropped"]:
        parts.append("<table><tr><th>sample</th><th>stage</th><th>reason</th><th>value</th></tr>")
        for d in r["dropped"][:500]:
            parts.append(f"<tr><td>{esc(d['key'])}</td><td>{esc(d['stage'])}</td><td>{esc(d['reason'])}</td><td>{esc(str(d.get('detail', '')))}</td></tr>")
        parts.append("</table>" + (f"<p>(first 500 of {len(r['dropped'])})</p>" if len(r["dropped"]) > 500 else ""))
    else:
        parts.append("<p>none</p>")
    parts.append("</section></body></html>")
    page = folder / "report.html"
    page.write_text("\n".join(parts), encoding="utf-8")

    md = [f"# {info['name']}", "", f"{info['num_samples']} samples, {info.get('num_dropped', 0)} dropped, {len(info.get('shards', []))} shards.", ""]
    if r["grid"]:
        md += ["![samples](report-grid.png)", ""]
    if metrics:
        md += ["| stage | FID | KID | precision | recall | density | coverage |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for where, m in sorted(metrics.items()):
            md.append(f"| {where} | " + " | ".join(f"{m[k]:.4g}" if isinstance(m.get(k), (int, float)) else "-" for k in ("fid", "kid", "precision", "recall", "density", "coverage")) + " |")
        md.append("")
    md += [f"![{n}]({n})" for n in r["charts"]] + ["", "## Dropped", ""]
    md += [f"- {d['key']} ({d['stage']}): {d['reason']} [{d.get('detail', '')}]" for d in r["dropped"][:500]] or ["none"]
    twin = folder / "report.md"
    twin.write_text("\n".join(md) + "\n", encoding="utf-8")
    from .output import OutputFolder
    from .storage import LocalStore

    OutputFolder(LocalStore(folder), info["name"]).record_extra(["report.html", "report.md", "report-grid.png", *r["charts"]])
    return page, twin
