"""`synth sweep MANIFEST --set KEY=v1,v2,... [--set ...]`: the fidelity-diversity trade-off as
one command. Runs the manifest once per value (or pair of values) into sibling folders, each a
complete, resumable dataset, then plots precision against recall and density against coverage per
value, with the Pareto front (the values no other beats on both) marked, as a PNG and a table.

KEY is a path into the manifest: ``generator.guidance_scale``, ``dataset.seed``,
``stage[2].sigma`` (by position) or ``stage.views.sigma`` (the first stage of that name). Values
are TOML scalars. The manifest needs a ``metrics`` stage (it gives the numbers).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from synth.errors import ManifestError, UsageError
from synth.figures import cell, figures
from synth.grid import assign, folder_name, label, parse_set
from synth.protocols import DatasetStage


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both higher is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((a >= x and b >= y) and (a > x or b > y) for j, (a, b) in enumerate(points) if j != i):
            front.append(i)
    return front


def _span(values: list[float]) -> tuple[float, float]:
    """An axis range around the values, zoomed in (points of a sweep often differ in the 2nd
    decimal) with a margin, never narrower than 0.05."""
    lo, hi = min(values), max(values)
    margin = max((hi - lo) * 0.15, (0.05 - (hi - lo)) / 2, 0.005)
    return lo - margin, hi + margin


def plot(rows: list[dict], path: Path) -> None:
    from PIL import Image, ImageDraw

    w, h, pad = 900, 420, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    panels = [("recall", "precision"), ("coverage", "density")]
    pw = w // 2
    for k, (xk, yk) in enumerate(panels):
        x0 = k * pw + pad
        pts = [(r["metrics"].get(xk), r["metrics"].get(yk)) for r in rows]
        ok = [(i, p) for i, p in enumerate(pts) if p[0] is not None and p[1] is not None]
        if not ok:
            continue
        (xlo, xhi), (ylo, yhi) = _span([p[0] for _, p in ok]), _span([p[1] for _, p in ok])
        sx = lambda v: x0 + (v - xlo) / (xhi - xlo) * (pw - 2 * pad)  # noqa: E731
        sy = lambda v: h - pad - (v - ylo) / (yhi - ylo) * (h - 2 * pad)  # noqa: E731
        d.line([(x0, pad - 20), (x0, h - pad), (x0 + pw - 2 * pad, h - pad)], fill="black")
        d.text((x0 + (pw - 2 * pad) // 2 - 20, h - pad + 22), xk, fill="black")
        d.text((x0 - 40, pad - 36), yk, fill="black")
        for t in (0.0, 0.5, 1.0):  # ticks at both ends and the middle of each (zoomed) axis
            xv, yv = xlo + t * (xhi - xlo), ylo + t * (yhi - ylo)
            d.text((sx(xv) - 12, h - pad + 4), f"{xv:.3f}", fill="black")
            d.text((x0 - 44, sy(yv) - 6), f"{yv:.3f}", fill="black")
        front = pareto([p for _, p in ok])
        fpts = sorted((ok[i][1] for i in front), key=lambda p: p[0])
        if len(fpts) > 1:
            d.line([(sx(a), sy(b)) for a, b in fpts], fill=(210, 40, 40), width=2)
        for j, (i, (a, b)) in enumerate(ok):
            c = (210, 40, 40) if j in front else (40, 80, 200)
            d.ellipse([sx(a) - 4, sy(b) - 4, sx(a) + 4, sy(b) + 4], fill=c)
            d.text((sx(a) + 6, sy(b) - 6), rows[i]["label"], fill=c)
    d.text((pad, 6), "red: Pareto front (no other value is better on both); axes zoomed to the values", fill=(210, 40, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def sweep(manifest_path: Path, sets: list[str], out: Path | None = None, quiet: bool = False, threads: int | None = None) -> dict:
    import tomli_w

    from synth.engine import run
    from synth.manifest import load_manifest, read_toml
    from synth.progress import BarProgress

    manifest_path = Path(manifest_path).expanduser().resolve()
    text, base = read_toml(manifest_path)
    if not sets:
        raise UsageError("give at least one --set KEY=v1,v2")
    if len(sets) > 2:
        raise UsageError("sweep over one or two fields (--set given more than twice)")
    parsed = [parse_set(s) for s in sets]
    first = load_manifest(manifest_path)
    if not any(issubclass(s.cls, DatasetStage) and s.cls.measures for s in first.stages):
        raise UsageError(f"{manifest_path}: sweep plots a measuring stage's numbers; add a metrics stage (or another that measures) with a reference set")
    root = out or first.output_dir().with_name(first.output_dir().name + "-sweep")
    # Every combination is built and validated before anything is made: a bad value costs no run
    # and leaves no folder behind.
    plans = []
    for values in itertools.product(*[v for _, v in parsed]):
        combo = {k: v for (k, _), v in zip(parsed, values)}
        data = json.loads(json.dumps(base))
        for k, v in combo.items():
            assign(data, k, v, str(manifest_path))
        label_text = label(combo)
        body = tomli_w.dumps(data)
        try:
            m = load_manifest(manifest_path, text=body)  # validate with the original's folder for paths
        except ManifestError as e:
            raise UsageError(f"--set {label_text}: {e.problems[0]}") from None
        plans.append((combo, label_text, body, m))
    rows = []
    for combo, label_text, body, m in plans:
        folder = root / folder_name(label_text)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.toml").write_text(f"# {manifest_path} with {label_text}\n" + body)
        summary = run(m, output=folder / "data", progress=BarProgress(disable=quiet), quiet=quiet, threads=threads)
        info = json.loads((folder / "data" / "dataset.json").read_text())
        metrics = next(iter((info.get("metrics") or {}).values()), {})
        rows.append({"label": label_text, "values": combo, "output": str(folder / "data"), "samples": info["num_samples"], "metrics": {k: metrics.get(k) for k, _ in figures(metrics)}, "labels": dict(figures(metrics))})
        if not quiet:
            import sys

            state = "nothing to do (already finished)" if summary.nothing_to_do else f"made {summary.shards_made} shards"
            print(f"sweep {label_text}: {state}; {summary.num_samples} samples; " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1]["metrics"].items() if isinstance(v, float)), file=sys.stderr)
    for xk, yk in (("recall", "precision"), ("coverage", "density")):
        ok = [i for i, r in enumerate(rows) if r["metrics"].get(xk) is not None and r["metrics"].get(yk) is not None]
        for j in pareto([(rows[i]["metrics"][xk], rows[i]["metrics"][yk]) for i in ok]):
            rows[ok[j]].setdefault("pareto", []).append(f"{yk}/{xk}")
    plot(rows, root / "sweep.png")
    shown: dict[str, str] = {}
    for r in rows:
        for k, name in r["labels"].items():
            shown.setdefault(k, name)
    table = ["| value | samples | " + " | ".join(shown.values()) + " | Pareto |", "| --- | --- |" + " --- |" * len(shown) + " --- |"]
    for r in rows:
        table.append(f"| {r['label']} | {r['samples']} | " + " | ".join(cell(r["metrics"], k) for k in shown) + f" | {', '.join(r.get('pareto', [])) or ''} |")
    (root / "sweep.md").write_text("\n".join(table) + "\n\n![sweep](sweep.png)\n")
    (root / "sweep.json").write_text(json.dumps(rows, indent=1, default=str))
    return {"folder": str(root), "rows": rows, "table": "\n".join(table)}
