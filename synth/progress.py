"""Progress of `synth run` (a bar on a terminal, steady lines in logs) and the final summary."""

from __future__ import annotations

from .bars import progress_bar
from .engine import Progress, RunSummary
from .figures import figures


class BarProgress(Progress):
    def __init__(self, disable: bool = False):
        self.disable = disable
        self.bar = None
        self.shards = 0
        self.total_shards = 0

    def start(self, total_samples, total_shards, done_samples, done_shards):
        self.shards, self.total_shards = done_shards, total_shards
        self.bar = progress_bar(total_samples, "synth run", "sample", initial=done_samples, disable=self.disable)
        self._postfix()

    def _postfix(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"shards {self.shards}/{self.total_shards}", refresh=False)

    def advance(self, samples):
        if self.bar is not None:
            self.bar.update(samples)

    def shard_done(self):
        self.shards += 1
        self._postfix()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def expected_share_text(report: dict, rows: int, dropped: int) -> str:
    """A filter that declares the share it should drop (Stage.report: expected_drop_share and the
    variance of that share from its calibration): the 95% band for this many rows, adding the
    run's own binomial noise, and whether the share dropped lies inside it."""
    import math

    f = float(report["expected_drop_share"])
    band = 1.96 * math.sqrt(float(report.get("expected_drop_variance", 0.0)) + f * (1 - f) / rows)
    inside = abs(dropped / rows - f) <= band
    return f"expected {100 * f:.0f}% ± {100 * band:.1f}% for {rows} samples ({'inside' if inside else 'OUTSIDE'} the 95% band)"


def format_summary(s: RunSummary) -> str:
    if s.nothing_to_do:
        return f"nothing to do: all {s.shards_total} shards in {s.output} are finished ({s.num_samples} samples)"
    rate = s.source_samples_made / s.seconds if s.seconds > 0 else 0.0
    lines = [
        f"wrote {s.samples_written} samples in {s.shards_made} shards to {s.output} "
        f"({s.seconds:.1f} s, {rate:.1f} samples/s" + (f", {s.threads} threads)" if s.threads else ")")
        + (f"; {s.shards_skipped} shards were already finished" if s.shards_skipped else ""),
    ]
    if s.dropped:
        lines.append(f"dropped {sum(s.dropped.values())}: " + "; ".join(f"{k} x{v}" for k, v in s.dropped.most_common()))
        lines += [f"  e.g. {ex}" for ex in s.drop_examples]
    for stage, (rows_in, rows_out) in s.filter_rows.items():
        if rows_in:
            line = f"{stage}: kept {rows_out} of {rows_in} ({100 * rows_out / rows_in:.1f}%), dropped {rows_in - rows_out} ({100 * (rows_in - rows_out) / rows_in:.1f}%)"
            rep = s.reports.get(stage.split(" ")[0]) or {}
            if rep.get("expected_drop_share") is not None:
                line += "; " + expected_share_text(rep, rows_in, rows_in - rows_out)
            lines.append(line)
    if len(s.workers) > 1 or any(w.get("failures") for w in s.workers):
        for w in s.workers:
            lines.append(
                f"  {w['worker']}: {w['shards']} shards, {w['samples']} samples, {w['seconds']:.1f} s"
                + (f", {w['failures']} failures (shard made again elsewhere)" if w.get("failures") else "")
            )
    for where, m in s.metrics.items():
        shown = [f"{label} {m[k]:.4g}" for k, label in figures(m) if isinstance(m.get(k), int | float)]
        if shown:
            lines.append(f"{where} {m.get('stage', '?')} ({m.get('samples', '?')} samples vs {m.get('reference', {}).get('samples', '?')} reference): " + ", ".join(shown))
    lines.append(f"dataset: {s.num_samples} samples; see {s.output}/dataset.json")
    return "\n".join(lines)
