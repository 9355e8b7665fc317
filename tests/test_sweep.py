"""`synth sweep`: one run per value into sibling folders, resumable, plotted with its Pareto front."""

import json

import pytest

from conftest import synth, write_manifest
from synth.errors import UsageError
from synth.grid import assign, parse_set
from synth_filters.sweep import pareto

MANIFEST = """
[dataset]
name = "s"
output = "out"
num_samples = 12
shard_size = 12
[run]
batch_size = 12
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = 4
[[stage]]
name = "generate"
[[stage]]
name = "metrics"
reference = { source = { name = "shapes", split = "test" }, count = 100 }
kid_subset_size = 8
"""


def test_keys_values_and_the_front():
    assert parse_set("generator.steps=2,4, 8") == ("generator.steps", [2, 4, 8])
    assert parse_set("stage.views.sigma=0.1,auto") == ("stage.views.sigma", [0.1, "auto"])
    data = {"generator": {"steps": 3}, "stage": [{"name": "generate"}, {"name": "views", "sigma": 0.2}]}
    assign(data, "stage.views.sigma", 0.5, "m")
    assign(data, "stage[0].extra", 1, "m")
    assign(data, "generator.steps", 9, "m")
    assert data == {"generator": {"steps": 9}, "stage": [{"name": "generate", "extra": 1}, {"name": "views", "sigma": 0.5}]}
    with pytest.raises(UsageError, match="no stage named 'viewz'"):
        assign(data, "stage.viewz.sigma", 1, "m")
    assert pareto([(0.5, 0.5), (0.6, 0.4), (0.4, 0.4), (0.6, 0.6)]) == [3]
    assert pareto([(0.9, 0.1), (0.1, 0.9), (0.5, 0.5), (0.4, 0.4)]) == [0, 1, 2]


def test_sweep_runs_each_value_into_its_own_resumable_dataset(tmp_path):
    m = write_manifest(tmp_path, MANIFEST)
    res = synth("sweep", m, "--set", "generator.steps=2,6", "-q")
    assert res.returncode == 0, res.stderr
    root = tmp_path / "out-sweep"
    rows = json.loads((root / "sweep.json").read_text())
    assert [r["label"] for r in rows] == ["steps=2", "steps=6"]
    for r in rows:
        info = json.loads((root / r["label"] / "data" / "dataset.json").read_text())
        assert info["manifest"]["identity"]["generator"]["steps"] == int(r["label"].split("=")[1])
        assert 0 <= r["metrics"]["precision"] <= 1 and r["metrics"]["fid"] >= 0
    assert (root / "sweep.png").read_bytes()[:4] == b"\x89PNG" and "| steps=6 |" in (root / "sweep.md").read_text()
    again = synth("sweep", m, "--set", "generator.steps=2,6")  # every run already finished: nothing redone
    assert again.returncode == 0 and again.stderr.count("nothing to do") == 2
    bad = write_manifest(tmp_path, MANIFEST.split("[[stage]]\nname = \"metrics\"")[0], "bad.toml")
    res = synth("sweep", bad, "--set", "generator.steps=2")
    assert res.returncode == 2 and "add a metrics stage" in res.stderr
