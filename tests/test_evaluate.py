"""`synth evaluate`: a manifest's labelling stages measured on held-out labelled images."""

import json

import numpy as np
from PIL import Image

from conftest import synth, write_manifest

BRIGHT = """
plugins = ["example"]
[dataset]
name = "e"
num_samples = 4
classes = ["dark", "mid", "bright"]
[generator]
name = "toy"
size = 16
[[stage]]
name = "generate"
[[stage]]
name = "bright_seg"
levels = 3
"""


def _held_out(folder, n=4):
    """Images whose exact bright_seg labels are known; image 0's mask is then made wrong on purpose."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    truths = []
    for i in range(n):
        img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        seg = np.minimum(img.mean(axis=-1) * 3 / 256.0, 2).astype(np.uint8)
        Image.fromarray(img).save(folder / f"im{i}.png")
        truths.append(seg)
    wrong = truths[0].copy()
    wrong[:8] = 0  # the top half says "dark" everywhere
    Image.fromarray(wrong).save(folder / "im0.seg.png")
    for i in range(1, n):
        Image.fromarray(truths[i]).save(folder / f"im{i}.seg.png")
    return truths, wrong


def test_evaluate_reports_per_class_iou_and_miou_with_the_bench_definition(tmp_path, example_plugin):
    from synth.segmetrics import class_ious

    truths, wrong = _held_out(tmp_path / "held")
    m = write_manifest(tmp_path, BRIGHT)
    res = synth("evaluate", m, "--labelled", tmp_path / "held", "--json", env={"PYTHONPATH": example_plugin["PYTHONPATH"]})
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    pred = np.stack(truths)  # bright_seg labels every image exactly as its true mask ...
    truth = np.stack([wrong] + truths[1:])  # ... but one held-out mask is wrong
    expected = class_ious(pred, truth, 3)
    assert r["images"] == 4 and r["labelled_by"] == "stage[1] bright_seg"
    assert [r["iou"][c] for c in ("dark", "mid", "bright")] == [round(v, 6) for v in expected]
    assert abs(r["miou"] - np.mean(expected)) < 1e-6 and r["miou"] < 1
    text = synth("evaluate", m, "--labelled", tmp_path / "held", env={"PYTHONPATH": example_plugin["PYTHONPATH"]}).stdout
    assert text.splitlines()[0].startswith("4 held-out images labelled by stage[1] bright_seg")
    assert f"mIoU {r['miou']:.3f}" in text


def test_evaluate_with_the_pixel_head_and_its_filter(tmp_path, models):
    m = write_manifest(
        tmp_path,
        f"""
[dataset]
num_samples = 4
classes = ["background", "circle", "square", "triangle"]
[generator]
name = "diffusers"
model = "{models['ddpm']}"
steps = 2
[[stage]]
name = "generate"
[[stage]]
name = "pixelhead"
timesteps = [5, 20]
ensemble = 2
steps = 30
batch_pixels = 256
calibration_samples = 16
cache_dir = "cache"
annotations = {{ source = {{ name = "shapes", size = 16 }}, count = 4 }}
[[stage]]
name = "drop_uncertain"
fraction = 0.5
""",
    )
    res = synth("evaluate", m, "--source", '{name = "shapes", split = "test", size = 16}', "-n", "12", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["images"] == 12 and r["labelled_by"] == "stage[1] pixelhead" and 0 <= r["miou"] <= 1
    assert set(r["iou"]) == {"background", "circle", "square", "triangle"}
    assert 0 < r["kept_by_filters"]["images"] < 12  # drop_uncertain keeps about half


def test_evaluate_bad_input_is_one_line(tmp_path, example_plugin):
    env = {"PYTHONPATH": example_plugin["PYTHONPATH"]}
    m = write_manifest(tmp_path, BRIGHT)
    res = synth("evaluate", m, env=env)
    assert res.returncode == 2 and "give --labelled PATH or --source TABLE" in res.stderr
    res = synth("evaluate", m, "--labelled", tmp_path / "nowhere", env=env)
    assert res.returncode == 2 and "no such folder" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "nomasks").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "nomasks" / "a.png")
    res = synth("evaluate", m, "--labelled", tmp_path / "nomasks", env=env)
    assert res.returncode == 2 and "gives images without masks" in res.stderr
    plain = write_manifest(tmp_path, BRIGHT.replace('[[stage]]\nname = "bright_seg"\nlevels = 3\n', ""), "plain.toml")
    _held_out(tmp_path / "held")
    res = synth("evaluate", plain, "--labelled", tmp_path / "held", env=env)
    assert res.returncode == 2 and "no stage after the source labels anything" in res.stderr
