"""Operators: sigma = "auto", data++ datasets read back from shards, prompt edits, the label
policy (class follows, class_soft across classes)."""

import io
import json

import numpy as np

from conftest import diffusers_manifest, synth, write_manifest
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples


def _samples(out):
    return [s for t in sorted(out.glob("*.tar")) for s in iter_samples(t)]


def test_sigma_auto_picks_a_smaller_radius_for_the_class_that_flips_sooner(tmp_path, example_plugin):
    """bright_class labels by mean brightness: class 1 is a narrow band, classes 0 and 2 are open
    ended, so views of class-1 parents leave their class at smaller radii (known answer)."""
    m = write_manifest(tmp_path, """
plugins = ["example"]
[dataset]
name = "auto"
num_samples = 6
shard_size = 6
classes = ["dark", "mid", "bright"]
[run]
batch_size = 6
[generator]
name = "toy"
size = 32
[[stage]]
name = "generate"
[[stage]]
name = "bright_class"
[[stage]]
name = "views"
k = 2
sigma = "auto"
auto = { labeller = { name = "bright_class" }, samples = 120, views = 6, radii = [0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0], target = 0.85 }
""")
    res = synth("run", m, env={"PYTHONPATH": example_plugin["PYTHONPATH"]})
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    info = json.loads((out / "dataset.json").read_text())
    rep = info["reports"]["stage[2]"]
    radius = rep["radius"]
    assert radius["1"] < radius["0"] and radius["1"] < radius["2"], radius
    assert rep["files"] == ["stage2-sigma_auto.png"] and (out / "stage2-sigma_auto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for cls, pts in rep["curve"].items():
        assert [r for r, _ in pts] == [0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0]
    # each view's radius is its parent's class radius, recorded in its lineage
    for s in _samples(out):
        rec = json.loads(s["json"])
        if rec["lineage"][-1]["op"] == "views":
            assert rec["lineage"][-1]["sigma"] == radius[str(rec["class"])]
    assert "sigma_auto" in (out / "README.md").read_text()


def test_sigma_auto_says_which_class_missed_its_target_and_can_refuse(tmp_path, example_plugin):
    """Radii too large for the target: the run says which class missed and its best agreement
    (summary, dataset.json, card), taking the smallest radius; on_miss = "error" stops in one line."""
    body = """
plugins = ["example"]
[dataset]
name = "miss"
num_samples = 2
shard_size = 2
classes = ["dark", "mid", "bright"]
[run]
batch_size = 2
[generator]
name = "toy"
size = 32
[[stage]]
name = "generate"
[[stage]]
name = "bright_class"
[[stage]]
name = "views"
k = 1
sigma = "auto"
auto = { labeller = { name = "bright_class" }, samples = 60, views = 4, radii = [0.9, 1.0], target = 0.999%s }
"""
    env = {"PYTHONPATH": example_plugin["PYTHONPATH"]}
    res = synth("run", write_manifest(tmp_path, body % ""), env=env)
    assert res.returncode == 0, res.stderr
    assert 'sigma = "auto": no radius from 0.9 up kept 100% agreement for' in res.stderr and "using the smallest radius, 0.9" in res.stderr
    rep = json.loads((tmp_path / "out" / "dataset.json").read_text())["reports"]["stage[2]"]
    assert rep["missed"] and all(0 <= best < 0.999 for best in rep["missed"].values())
    assert "target not met: best" in (tmp_path / "out" / "README.md").read_text()
    res = synth("run", write_manifest(tmp_path, body % ', on_miss = "error"', "err.toml"), "--output", tmp_path / "out2", env=env)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "stage 'views'.auto: sigma = \"auto\": no radius from 0.9 up kept" in line and 'set on_miss = "smallest"' in line


def test_a_dataset_made_earlier_is_read_back_with_its_latents(tmp_path, models):
    first = diffusers_manifest(tmp_path, models["ddpm"], n=4, shard=4, batch=4, name="first.toml", output="first")
    assert synth("run", "-q", first).returncode == 0
    stages = '[[stage]]\nname = "shards"\nurls = "first/d-000000.tar"\n[[stage]]\nname = "views"\nk = 1\nsigma = 0.2\n'
    second = diffusers_manifest(tmp_path, models["ddpm"], stages=stages, n=4, shard=4, batch=4, name="second.toml", output="second")
    pipe = Pipeline(load_manifest(second))
    pipe.setup()
    b = pipe.run_batch([0, 1, 2, 3])
    old = {s["__key__"]: s for s in _samples(tmp_path / "first")}
    for i, k in enumerate(b.keys):
        if "_v" in k:
            continue
        src = np.load(io.BytesIO(old[f"s{int(k[1:]):08d}"]["latent.npy"]), allow_pickle=False)
        np.testing.assert_array_equal(b.latents[i], src.astype(np.float32))
        assert [op["op"] for op in b.records[i]["lineage"]] == ["generate", "read"]
    # shards made by another generator: their latents are not this model's, so views need an invert
    other = diffusers_manifest(tmp_path, models["ddpm_cls"], dataset='classes = ["a", "b", "c"]', stages=stages, n=4, shard=4, batch=4, name="third.toml", output="third")
    res = synth("validate", other)
    assert res.returncode == 2 and "stage 'views' works on latents, but no earlier stage gives them" in res.stderr


def test_prompt_edit_keeps_the_latent_and_the_noise(tmp_path, models):
    m = diffusers_manifest(
        tmp_path, models["sd"], dataset='classes = ["cat", "dog"]', generator='templates = ["a photo of a {cls}"]\nguidance_scale = 1.0\nscheduler = "ddpm"',
        stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "prompt_edit"\ntemplates = ["a {cls} in snow", "a {cls} at night"]\n', n=2, shard=2, batch=2,
    )
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    s = {x["__key__"]: x for x in _samples(tmp_path / "out")}
    parent = json.loads(s["s00000001"]["json"])
    for j, text in enumerate(("a dog in snow", "a dog at night")):
        child = s[f"s00000001_p{j}"]
        rec = json.loads(child["json"])
        assert rec["condition"]["prompt"] == text and rec["group"] == "s00000001" and rec["class"] == parent["class"] == 1
        assert child["latent.npy"] == s["s00000001"]["latent.npy"]
        assert rec["decode"]["index"] == parent["decode"]["index"]  # the same sampler noise (ddpm adds noise every step)
        assert child["png"] != s["s00000001"]["png"]  # only the prompt changed, and it shows


def test_class_labels_follow_views_and_interpolations_carry_soft_labels(tmp_path, models):
    stages = """
[[stage]]
name = "generate"
[[stage]]
name = "views"
k = 1
sigma = 0.1
[[stage]]
name = "interpolate"
pairs = "keys"
keys = [["s00000000", "s00000001"]]
alphas = [0.25, 0.75]
"""
    m = diffusers_manifest(tmp_path, models["ddpm_cls"], dataset='classes = ["a", "b", "c"]', stages=stages, n=3, shard=3, batch=3)
    pipe = Pipeline(load_manifest(m))
    pipe.setup()
    b = pipe.run_batch([0, 1, 2])
    rec = dict(zip(b.keys, b.records))
    assert rec["s00000000_v0"]["class"] == rec["s00000000"]["class"] == 0
    assert rec["s00000001_v0"]["class"] == 1
    assert rec["s00000000_i0"]["class"] == 0 and rec["s00000000_i1"]["class"] == 1  # the nearer end's class
    assert rec["s00000000_i0"]["class_soft"] == {"0": 0.75, "1": 0.25}
    assert rec["s00000000_i1"]["class_soft"] == {"0": 0.25, "1": 0.75}
    assert rec["s00000000_v0"]["class_soft"] is None
