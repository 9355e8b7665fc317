"""The search's table on `synth report`'s page: a report of a trial's data (or of the manifest's
own output, beside which the search folder `<output>-optimise` sits) shows every trial's score and
cost, the best marked, the score-against-cost plot inlined, and which trial this output is."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from synth.protocols import ReportSection


def search_of(folder: Path) -> tuple[Path, dict] | None:
    """The search this output belongs to: a trial's data folder (<root>/trials/<label>/n<N>/data),
    or the output whose search folder sits beside it."""
    folder = Path(folder).resolve()
    for root in (folder.parents[3] if len(folder.parents) > 3 else None, folder.with_name(folder.name + "-optimise")):
        if root is not None and (root / "optimise.json").is_file():
            try:
                return root, json.loads((root / "optimise.json").read_text())
            except (OSError, ValueError):
                return None
    return None


class OptimiseSection(ReportSection):
    name = "optimise"
    title = "Optimise: the search this output belongs to"

    @classmethod
    def render(cls, folder) -> tuple[str, str] | None:
        from .search import table

        found = search_of(Path(folder))
        if found is None:
            return None
        root, result = found
        folder = Path(folder).resolve()
        this = next((t for t in result.get("trials", []) if folder == (root / "trials").resolve() / _folder(t) / f"n{t['samples']}" / "data"), None)
        best = result["best"]
        esc = html.escape
        lines = [
            f"<p>{esc(str(result.get('tried')))} settings of {esc(str(result.get('settings')))} by successive halving, validation "
            f"{esc(str(result.get('validation')))} ({result.get('validation_images')} images), score {esc(result['score'])}; "
            f"cost {result.get('cost_runs')} runs of the manifest. Best: <b>{esc(best['label'])}</b> {best['score']:.4f} on {best['samples']} samples "
            f"(<code>{esc(str(root / 'best.toml'))}</code>)."
            + (f" This output is the trial <b>{esc(this['label'])}</b> on {this['samples']} samples." if this else "") + "</p>",
            "<table id=optimise-trials><tr><th>rung</th><th>setting</th><th>samples</th><th>kept</th>"
            f"<th>{esc(result['score'])}</th><th>cost so far (runs)</th></tr>",
        ]
        for t in result.get("trials", []):
            mark = " class=best" if t["label"] == best["label"] and t["samples"] == best["samples"] else (" class=this" if t is this else "")
            lines.append(f"<tr{mark}><td>{t['rung'] + 1}</td><td>{esc(t['label'])}</td><td>{t['samples']}</td><td>{t['kept']}</td>"
                         f"<td>{t['score']:.4f}</td><td>{t['cost_after']:.2f}</td></tr>")
        lines.append("</table>")
        plot = root / "optimise.png"
        if plot.is_file():
            data = base64.b64encode(plot.read_bytes()).decode()
            lines.append(f'<img id=optimise-plot alt="score against cost" src="data:image/png;base64,{data}">')
        markdown = f"## {cls.title}\n\nBest: {best['label']} ({best['score']:.4f} on {best['samples']} samples), {root / 'best.toml'}\n\n" + table(result)
        return "\n".join(lines), markdown


def _folder(trial: dict) -> str:
    from synth.grid import folder_name

    return folder_name(trial["label"])
