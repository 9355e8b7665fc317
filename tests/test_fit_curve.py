"""bench/fit_curve.py's verdict: which recipe reached the old recipe's final fidelity, and when."""

import os
import subprocess
import sys
from conftest import BENCH, bench_module


def _module():
    return bench_module("fit_curve")


def _curve(points):
    return [{"minutes": m, "fidelity": f, "precision": 0.9, "recall": 0.9} for m, f in points]


def test_reach_needs_the_curve_to_stay_at_the_target():
    reach = _module().reach
    assert reach(_curve([(0, 0.2), (10, 0.61), (20, 0.55), (30, 0.62)]), 0.6) == 30
    assert reach(_curve([(0, 0.2), (10, 0.5)]), 0.6) is None


def test_the_soonest_recipe_wins_not_the_longest_curve():
    summary_line = _module().summary_line
    curves = {
        "old": _curve([(0, 0.25), (75, 0.59)]),
        # a 75-minute baseline curve that ends higher, but reaches 0.59 late ...
        "long": _curve([(0, 0.25), (60, 0.62), (75, 0.64)]),
        # ... against a 30-minute one that reaches it at 25 minutes
        "short": _curve([(0, 0.25), (25, 0.60), (30, 0.61)]),
    }
    line = summary_line(curves)
    assert "best short:" in line and "reached at 25 min (3.0x faster)" in line
    # none reaches it: the highest at its own end, and "never"
    slow = {"old": curves["old"], "a": _curve([(0, 0.2), (30, 0.50)]), "b": _curve([(0, 0.2), (30, 0.55)])}
    line = summary_line(slow)
    assert "best b: fidelity 0.550" in line and "reached at never min (never)" in line
    assert summary_line({"a": curves["short"]}) is None  # no old recipe, no verdict


def test_fit_compare_scores_a_model_against_a_world():
    script = BENCH / "fit_compare.py"
    res = subprocess.run(
        [sys.executable, str(script), "builtin:shapes-32", "--world", "cells", "--n", "24", "--steps", "2", "--threads", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    # a shapes model against cells scenes: a real, bad score in the line scripts read
    assert last.startswith("best FID builtin:shapes-32: precision ") and "; recall " in last and "; FID " in last
    assert float(last.rsplit("FID ", 1)[1]) > 0
