"""What `synth discover` shows: each direction's strip (images down, steps across, the
classifier's probability of the target under each) and one HTML page with the ranking, what
each direction moves, its flip rate and MNAC, and the command that makes data from it."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

CELL = 96  # pixels a strip cell is drawn at (32 px scenes are unreadable at their own size)
LABEL = 14


def strip_png(strip: np.ndarray, probs: np.ndarray, columns: list[float | str], path: Path) -> None:
    """(images, columns, H, W, 3) uint8 and (images, columns) probabilities as one PNG; each
    column headed by its step (a number) or by the name given."""
    from PIL import Image, ImageDraw, ImageFont

    rows, cols = strip.shape[:2]
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (cols * CELL, LABEL + rows * (CELL + LABEL)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, a in enumerate(columns):
        draw.text((j * CELL + 4, 1), a if isinstance(a, str) else f"step {a:+g}", fill="black", font=font)
    for i in range(rows):
        top = LABEL + i * (CELL + LABEL)
        for j in range(cols):
            cell = Image.fromarray(strip[i, j]).resize((CELL, CELL), Image.NEAREST)
            canvas.paste(cell, (j * CELL, top))
            draw.text((j * CELL + 4, top + CELL + 1), f"p = {probs[i, j]:.2f}", fill="black", font=font)
    canvas.save(path, optimize=False)


def baseline_text(bases: dict) -> str:
    if not bases:
        return ""
    effects = ", ".join(f"<span class=baseline-effect id=baseline-effect-{html.escape(s)}>{b['effect']:.3f}</span> in {html.escape(s)}" for s, b in bases.items())
    return (f" For scale, random directions of the same step change the target's log-odds by {effects} per step on average;"
            " what they change is under each direction's own shares.")


def spaces_text(spaces: list[dict]) -> str:
    """Where the candidates were looked for: each space's block, window and unit step."""
    def one(s):
        what = "the conditioning the UNet reads" if s["block"] == "condition" else f"block <code>{html.escape(s['block'])}</code>"
        unit = f", a step {s['step']:g} of its RMS" if s.get("step", 1.0) != 1.0 else ""
        return f"{what}, shifted from {s['start']:g} to {s['until']:g} of the sampling steps{unit}"
    return "; ".join(one(s) for s in spaces)


def write_page(result: dict, path: Path) -> None:
    e = html.escape
    target = e(result["target"])
    attrs = result["attributes"]
    rows, sections = [], []
    bases = result.get("baseline") or {}

    def base_row(space: str) -> str:
        base = bases.get(space)
        if not base:
            return ""
        cells = "".join(f"<td class=share>{base['changed'][a]:.2f}</td>" for a in attrs)
        return f"<tr class=baseline><th colspan={len(attrs)}>random directions of the same step in {e(space)} ({base['directions']})</th></tr><tr class=baseline>{cells}</tr>"
    where = ", the direction kept where the classifier looks in each image" if result.get("localise") else ""
    for d in result["directions"]:
        rows.append(
            f"<tr class=direction id=row-{d['rank']}><td>{d['rank']}</td><td><code>{e(d['name'])}</code></td>"
            f"<td class=space>{e(d['space'])}</td><td class=moves>{e(d['moves'])}</td><td class=effect>{d['effect']:.3f}</td>"
            f"<td class=flip-rate>{d['flip_rate']:.2f}</td><td class=mnac>{d['mnac']:.2f}</td></tr>"
        )
        shares = "".join(f"<td class='share{' main' if a == d['moves'] else ''}'>{d['changed'][a]:.2f}</td>" for a in attrs)
        sections.append(
            f"<section class=strip-section id=direction-{d['rank']}><h2>{d['rank']}. {e(d['name'])}: moves {e(d['moves'])}</h2>"
            f"<p>Share of images whose attribute changed from one end of the strip to the other{where}:</p>"
            f"<table class=changes><tr>{''.join(f'<th>{e(a)}</th>' for a in attrs)}</tr><tr class=this>{shares}</tr>{base_row(d['space'])}</table>"
            f"<img class=strip src='{e(d['strip'])}' alt='strip of {e(d['name'])}'>"
            + (f"<p>Its counterfactuals (the least step that flips each image{where}; flip rate and MNAC are judged on these):</p>"
               f"<img class=counterfactuals src='{e(d['counterfactuals'])}' alt='counterfactuals of {e(d['name'])}'>" if d.get("counterfactuals") else "")
            + f"<p>Counterfactual data from it, in a manifest after its source:</p><pre class=snippet>[[stage]]\nname = \"direction\"\n"
            f"saved = \"{e(d['name'])}\"\nalphas = [{', '.join(f'{a:g}' for a in result['alphas'] if a)}]</pre></section>"
        )
    clf = e(", ".join(f"{k} = {v}" for k, v in result["classifier"].items()))
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>What the classifier relies on for {target}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
td.main {{ font-weight: bold; background: #fff3c4; }}
img.strip, img.counterfactuals {{ image-rendering: pixelated; border: 1px solid #ddd; }}
</style></head><body>
<h1>What the classifier relies on for <q id=target>{target}</q></h1>
<p id=summary>Classifier: {clf}. Classes: {e(', '.join(result['classes']))}. {result['images']} images of the source
<code>{e(result['source'])}</code>; {result['candidates']} candidate directions in the generator's h-space
({spaces_text(result['spaces'])}),
ranked greedily by the mean change of the target's log-odds per unit step (AttFind). A counterfactual is each image
stepped toward the other decision by the least step up to {result['step']:g} that flips it; attributes by the <code>{e(result['probe'])}</code> probe.{baseline_text(bases)}</p>
<table id=directions><tr><th>rank</th><th>saved as</th><th>space</th><th>moves</th><th>effect (log-odds per step)</th><th>flip rate</th><th>MNAC</th></tr>
{''.join(rows)}
</table>
{''.join(sections)}
</body></html>
"""
    path.write_text(page, encoding="utf-8")
