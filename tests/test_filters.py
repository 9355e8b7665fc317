"""Filters and dataset-level stages: realism, memorisation, dedup, select, metrics; determinism,
resume through the dataset-level phase, bad input."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest
from synth.reading import iter_samples

HEAD = """
[dataset]
name = "f"
output = "{output}"
num_samples = {n}
shard_size = {shard}
classes = ["background", "circle", "square", "triangle"]
[run]
batch_size = {batch}
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = 4
"""
TEST_REF = '{ source = { name = "shapes", split = "test" }, count = 200 }'


def _manifest(tmp_path, stages, n=24, shard=8, batch=8, name="m.toml", output="out"):
    return write_manifest(tmp_path, HEAD.format(n=n, shard=shard, batch=batch, output=output) + stages, name)


def _samples(out):
    return [s for t in sorted(out.glob("*.tar")) for s in iter_samples(t)]


def _keys(out):
    return [s["__key__"] for s in _samples(out)]


def test_realism_drops_exactly_below_its_threshold_with_reasons(tmp_path):
    m = _manifest(tmp_path, f'[[stage]]\nname = "generate"\n[[stage]]\nname = "realism"\nreference = {TEST_REF}\nmin = 0.8\n')
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    kept = [json.loads(s["json"])["scores"]["realism"] for s in _samples(tmp_path / "out")]
    assert kept and all(v >= 0.8 for v in kept)
    drops = [d for p in sorted((tmp_path / "out").glob("*.stats.json")) for d in json.loads(p.read_text())["dropped"]]
    assert len(kept) + len(drops) == 24 and drops  # the threshold bites on this small model
    assert all(d["reason"] == "realism < min 0.8" and float(d["detail"]) < 0.8 for d in drops)


def test_memorisation_catches_a_near_copy_of_a_training_image(tmp_path):
    from synth_shapes.world import render_many

    train, _ = render_many(0, range(300), 32, 0.5, "train")
    other, _ = render_many(0, range(5), 32, 0.5, "test")
    rng = np.random.default_rng(0)
    folder = tmp_path / "candidates"
    folder.mkdir()
    for i in range(5):  # five training images with a little noise, five scenes never seen
        noisy = np.clip(train[i * 7].astype(int) + rng.integers(-4, 5, train[0].shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"copy{i}.png")
        Image.fromarray(other[i]).save(folder / f"new{i}.png")
    m = write_manifest(tmp_path, """
[dataset]
name = "mem"
num_samples = 10
shard_size = 10
[[stage]]
name = "folder"
path = "candidates"
[[stage]]
name = "memorisation"
reference = { source = { name = "shapes", split = "train" }, count = 300 }
""")
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    stats = json.loads((tmp_path / "out" / "mem-000000.stats.json").read_text())
    dropped = sorted(d["key"] for d in stats["dropped"])
    files = sorted(p.name for p in folder.iterdir())  # the folder source reads them sorted: copy0..4, new0..4
    assert [files[int(k[1:])] for k in dropped] == [f"copy{i}.png" for i in range(5)]
    assert all(d["reason"].startswith("memorised: closer to a reference image than 1%") for d in stats["dropped"])


def test_dedup_keeps_the_lowest_index_whatever_the_batches_and_shards(tmp_path):
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "views"\nk = 2\nsigma = 0.002\n[[stage]]\nname = "dedup"\nthreshold = 0.995\n'
    a = _manifest(tmp_path, stages, n=12, shard=6, batch=6, name="a.toml", output="a")
    b = _manifest(tmp_path, stages, n=12, shard=4, batch=2, name="b.toml", output="b")
    for m in (a, b):
        res = synth("run", m)
        assert res.returncode == 0, res.stderr
    ka, kb = _keys(tmp_path / "a"), _keys(tmp_path / "b")
    assert ka == kb == [f"s{i:08d}" for i in range(12)]  # every near-copy view goes; its parent (first) stays
    info = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert info["dropped_by_reason"] == {"dedup: near-duplicate (cosine >= 0.995)": 24}
    d = json.loads((tmp_path / "a" / "f-000000.stats.json").read_text())["dropped"][0]
    assert d["key"] == "s00000000_v0" and d["detail"].startswith("of s00000000 (cosine ")
    assert not (tmp_path / "a" / ".candidates").exists()


@pytest.mark.parametrize(
    "rule, origin",
    [("", "extractor 'shapes''s measured real-to-real threshold"), (f"reference = {TEST_REF}\n", "closer than 1% of 200 reference images to their nearest")],
)
def test_dedup_by_default_drops_near_copies_and_keeps_different_scenes(tmp_path, rule, origin):
    """No threshold given: real-to-real distances set it (the extractor's measurement, or the
    reference's). Different scenes all stay (a cosine of 0.95 merged them); near-copies go."""
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "views"\nk = 2\nsigma = 0.002\n[[stage]]\nname = "dedup"\n' + rule
    res = synth("run", _manifest(tmp_path, stages, n=12, shard=12, batch=6))
    assert res.returncode == 0, res.stderr
    assert _keys(tmp_path / "out") == [f"s{i:08d}" for i in range(12)]
    (reason,) = json.loads((tmp_path / "out" / "dataset.json").read_text())["dropped_by_reason"]
    assert reason.startswith("dedup: near-duplicate (cosine >= 0.99") and origin in reason, reason


def test_selection_is_deterministic_and_resumes_byte_identical(tmp_path):
    stages = f'[[stage]]\nname = "generate"\n[[stage]]\nname = "select"\nkeep = 10\n[[stage]]\nname = "metrics"\nreference = {TEST_REF}\nkid_subset_size = 8\n'
    m = _manifest(tmp_path, stages, n=24, shard=8, batch=8)
    assert synth("run", "-q", m).returncode == 0
    out = tmp_path / "out"
    ref = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".tar", ".json") and not p.name.startswith(".")}
    info = json.loads(ref["dataset.json"])
    assert info["num_samples"] == 10
    metrics = info["metrics"]["stage[2]"]
    assert set(metrics) >= {"fid", "kid", "precision", "recall", "density", "coverage"} and metrics["samples"] == 10
    other = _manifest(tmp_path, stages, n=24, shard=8, batch=3, name="b.toml", output="b")
    assert synth("run", "-q", other).returncode == 0
    assert _keys(tmp_path / "b") == _keys(out)  # the batch size does not change the selection
    # killed after the candidates, with two final shards and dataset.json still to write
    (out / "f-000001.tar").unlink()
    (out / "f-000002.stats.json").unlink()
    (out / "dataset.json").unlink()
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    again = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".tar", ".json") and not p.name.startswith(".")}
    assert again == ref
    assert f"stage[2] metrics (10 samples vs 200 reference): FID {metrics['fid']:.4g}" in res.stderr


def test_a_run_killed_during_the_dataset_phase_resumes_byte_identical(tmp_path):
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "dedup"\nthreshold = 0.9\n'
    m = _manifest(tmp_path, stages, n=32, shard=4, batch=4)
    assert synth("run", "-q", m, "--output", tmp_path / "ref").returncode == 0
    ref = {p.name: p.read_bytes() for p in (tmp_path / "ref").iterdir() if p.suffix == ".tar"}
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "synth", "run", "-q", str(m)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((out / ".candidates").glob("f-*.tar"))) >= 5:  # mid-way through the candidates
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".tar"} == ref


@pytest.mark.parametrize(
    "stages, expected",
    [
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "realism"\nreference = { source = { name = "folder", path = "empty" }, count = 10 }\n', "stage[1].reference.source.path: no images in"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "realism"\nreference = { source = { name = "shapes", size = 64 }, count = 10 }\n', "reference: images are 64x64, the samples 32x32"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "realism"\nextractor = { name = "clip", model = "./no-clip-here" }\nreference = { source = { name = "shapes" }, count = 10 }\n', "stage[1].extractor.model: no such folder"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "dedup"\nthreshold = 1.5\n', "stage[1].threshold: Input should be less than or equal to 1"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "dedup"\nextractor = "generator"\n', "stage[1].threshold: extractor 'generator' has no measured duplicate threshold; give threshold, or reference"),
        (f'[[stage]]\nname = "generate"\n[[stage]]\nname = "dedup"\nthreshold = 0.99\nreference = {TEST_REF}\n', "stage[1]: give threshold or reference, not both"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "clip_score"\nextractor = "shapes"\n', "stage[1]: stage 'clip_score' needs ['condition:prompt'], which builtin:shapes-32 does not offer"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "select"\nkeep = 4\nextractor = "shapez"\n', "stage[1].extractor.name: unknown extractor 'shapez'; did you mean 'shapes'?"),
    ],
)
def test_filter_bad_input_is_one_line_before_any_sample_is_written(tmp_path, stages, expected):
    (tmp_path / "empty").mkdir()
    res = synth("run", _manifest(tmp_path, stages))
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert expected in line, line
    assert not list((tmp_path / "out").glob("*.tar")) if (tmp_path / "out").exists() else True
