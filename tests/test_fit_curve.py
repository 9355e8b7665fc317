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


def _timed(points, rate):
    return [{"minutes": m, "steps": round(m * rate), "fidelity": f, "precision": 0.9, "recall": 0.9} for m, f in points]


def test_a_faster_machine_is_put_on_the_baseline_clock():
    on_baseline_clock = _module().on_baseline_clock
    baseline = {"old": _timed([(0, 0.25), (75, 0.59)], rate=90)}
    # 1.5x the baseline's steps per CPU minute: 20 minutes here are 30 of the baseline's
    fast = {"new": _timed([(0, 0.25), (10, 0.5), (20, 0.6)], rate=135)}
    moved, note = on_baseline_clock(fast, baseline)
    assert [r["minutes"] for r in moved["new"]] == [0, 15, 30]
    assert [r["cpu_minutes"] for r in moved["new"]] == [0, 10, 20]
    assert "1.50x" in note
    # the same step rate (within 10%): minutes are left as measured
    same = {"new": _timed([(0, 0.25), (20, 0.6)], rate=95)}
    assert on_baseline_clock(same, baseline) == (same, None)
    # a run that recorded no steps cannot be moved: left as measured, and said
    untimed = {"new": _curve([(0, 0.25), (20, 0.6)])}
    moved, note = on_baseline_clock(untimed, baseline)
    assert moved == untimed and "unknown" in note


def test_a_finished_run_is_reported_again_on_the_baseline_clock(tmp_path):
    import json

    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"old": _timed([(0, 0.25), (75, 0.59)], rate=90)}))
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"new": _timed([(0, 0.25), (10, 0.5), (20, 0.6), (30, 0.65)], rate=135)}))
    cmd = [sys.executable, str(BENCH / "fit_curve.py"), "--curves", str(run), "--baseline", str(baseline), "--out", str(tmp_path / "out")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    # 20 CPU minutes at 1.5x the baseline's step rate are 30 of its minutes: 2.5x, not 3.75x
    assert res.stdout.strip().splitlines()[-1].endswith("old's final reached at 30.0 min (2.5x faster)")
    assert (tmp_path / "out" / "fit_curve.png").stat().st_size > 0
    missing = subprocess.run(cmd[:3] + [str(tmp_path / "nope.json")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--curves" in missing.stderr.splitlines()[-1]
    (tmp_path / "list.json").write_text("[1, 2]")
    wrong = subprocess.run(cmd[:3] + [str(tmp_path / "list.json")], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "not a fit_curve.json" in wrong.stderr.splitlines()[-1]


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
