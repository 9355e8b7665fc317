"""The numbers a measuring stage returned (Stage.measure, kept in dataset.json under "metrics"),
as every reader shows them: the card, the report, the run's summary and sweep. The stage names
its figures and their order in "figures" ([[key, label], ...]); a new metric is then a change to
that stage alone."""

from __future__ import annotations

from typing import Any

# Entries of a measure result that describe the measurement rather than being one of its figures.
_ABOUT = {"stage", "samples", "reference", "extractor", "figures", "class_balance"}


def figures(measured: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, label) of each figure, in the stage's order; without "figures" (an older output),
    every top-level number, by key."""
    named = measured.get("figures")
    if isinstance(named, list) and all(isinstance(f, list | tuple) and len(f) == 2 for f in named):
        return [(str(k), str(label)) for k, label in named]
    return [(k, k) for k, v in sorted(measured.items()) if k not in _ABOUT and isinstance(v, int | float) and not isinstance(v, bool)]


def columns(all_measured: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The figures of several measuring stages, merged in first-seen order (a table's columns)."""
    out: dict[str, str] = {}
    for m in all_measured.values():
        for k, label in figures(m):
            out.setdefault(k, label)
    return list(out.items())


def cell(measured: dict[str, Any], key: str) -> str:
    value = measured.get(key)
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"
