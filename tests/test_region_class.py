"""region_class: each region an earlier labeller drew takes the class a classifier of whole
regions gives it, trained on the labelled examples' instances. On the shapes world: regions whose
pixels were all given the wrong kind come back to their kind by their outline alone; a heavy
prior keeps the labeller's votes; the outline never changes; a run records it, reruns the same
bytes from a fresh cache, and refuses to run without a labeller before it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import synth, write_manifest

CLASSES = ["background", "circle", "square", "triangle"]


def test_instances_are_the_labelled_regions_of_each_class():
    from synth_regionclass import instances

    mask = np.zeros((12, 12), np.int64)
    mask[1:4, 1:4] = 1  # two circles apart, a square, and a 2-pixel sliver too small to learn from
    mask[8:11, 8:11] = 1
    mask[1:5, 7:11] = 2
    mask[10, 0:2] = 3
    image = np.zeros((12, 12, 3), np.uint8)
    crops, labels = instances(image[None], mask[None], 0, 16, False, 3)
    assert crops.shape == (3, 1, 16, 16) and sorted(labels.tolist()) == [1, 1, 2]
    assert all(c[0].any() and c[0].sum() < 16 * 16 for c in crops)  # a silhouette with margin around it
    crops, _ = instances(image[None], mask[None], 0, 16, True, 3)
    assert crops.shape == (3, 4, 16, 16)


@pytest.fixture(scope="module")
def trained():
    import torch

    from synth_regionclass import instances, train_classifiers
    from synth_shapes.world import render_many

    torch.set_num_threads(1)
    images, masks = render_many(0, range(24), 32, 0.5, "train")
    crops, labels = instances(images, masks.astype(np.int64), 0, 24, False, 3)
    known = np.bincount(labels, minlength=4) > 0
    return torch, train_classifiers(torch, crops, labels, 4, 2, 300, seed=0), known


def test_swapped_regions_get_their_kind_back_and_a_heavy_prior_keeps_the_votes(trained):
    from synth_regionclass import classify_regions
    from synth_shapes.world import render_many

    torch, nets, known = trained
    images, masks = render_many(0, range(40), 32, 0.5, "test")
    truth = masks.astype(np.int64)
    swapped = np.where(truth > 0, truth % 3 + 1, 0)  # every shape's pixels given another kind
    fixed = np.stack([classify_regions(torch, nets, known, x, y, 0, 25, 24, False, 0.0, 3) for x, y in zip(images, swapped)])
    kept = np.stack([classify_regions(torch, nets, known, x, y, 0, 25, 24, False, 10.0, 3) for x, y in zip(images, swapped)])
    shape = truth > 0
    assert ((fixed == 0) == (swapped == 0)).all() and ((kept == 0) == (swapped == 0)).all()  # the outline stays
    assert (fixed[shape] == truth[shape]).mean() > 0.6  # by its outline alone; the swapped labels had none right
    assert (kept[shape] == swapped[shape]).mean() > 0.95  # votes all one way outweigh the classifier


MANIFEST = """
[dataset]
name = "rc"
output = "out"
num_samples = 6
shard_size = 3
seed = 0
classes = {classes}

{stages}

[[stage]]
name = "region_class"
annotations = {{ source = {{ name = "shapes", split = "train" }}, count = 8 }}
ensemble = 2
steps = 100
"""
SHAPES = '[[stage]]\nname = "shapes"\nsplit = "test"'


def test_a_run_classes_a_labellers_regions_records_it_and_reruns_the_same_bytes(tmp_path):
    import webdataset as wds

    m = write_manifest(tmp_path, MANIFEST.format(classes=json.dumps(CLASSES), stages=SHAPES))
    for name, cache in (("first", "c1"), ("again", "c2")):  # a fresh cache trains again: the same classifier
        res = synth("run", "-q", m, "--output", tmp_path / name, env={"SYNTH_CACHE_DIR": str(tmp_path / cache)})
        assert res.returncode == 0, res.stderr
    first, again = sorted((tmp_path / "first").glob("*.tar")), sorted((tmp_path / "again").glob("*.tar"))
    assert len(first) == 2 and [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    samples = list(wds.WebDataset([str(p) for p in first], shardshuffle=False).decode("rgb8"))
    assert len(samples) == 6
    for s in samples:
        labels = s["json"]["labels"]["region_class"]
        assert labels["input"] == "mask" and labels["prior"] == 0.5 and len(labels["classifier"]) == 16
    from synth_regionclass import instances
    from synth_shapes.world import render_many

    images, masks = render_many(0, range(8), 32, 0.5, "train")  # the annotations: what it learnt from
    counts = np.bincount(instances(images, masks.astype(np.int64), 0, 24, False, 3)[1], minlength=4).tolist()
    report = json.loads((tmp_path / "first" / "reports.json").read_text())["stage[1]"]
    assert report["instances"] == dict(zip(CLASSES, counts)) and counts[0] == 0 and min(counts[1:]) > 0


def test_without_a_labeller_before_it_the_run_is_refused_in_one_line(tmp_path):
    m = write_manifest(tmp_path, MANIFEST.format(classes=json.dumps(CLASSES), stages='[[stage]]\nname = "folder"\npath = "."'))
    res = synth("run", "-q", m)
    assert res.returncode == 2 and "put a labeller (pixelhead, sam, attention) before it" in res.stderr and "Traceback" not in res.stderr
    m = write_manifest(tmp_path, MANIFEST.format(classes=json.dumps(["bg", "circle"]), stages=SHAPES), "bg.toml")
    res = synth("run", "-q", m)
    assert res.returncode == 2 and "background: 'background' is not one of [dataset].classes" in res.stderr


def test_another_process_adopts_the_trained_classifier_and_labels_the_same(tmp_path, monkeypatch):
    """What an executor ships to its other processes (share) labels exactly as the original."""
    import pickle

    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    m = write_manifest(tmp_path, MANIFEST.format(classes=json.dumps(CLASSES), stages=SHAPES))
    first = Pipeline(load_manifest(m), quiet=True)
    first.setup()
    shared = pickle.loads(pickle.dumps(first.shared_state()))  # as it crosses to another process
    assert shared["stage[1]"]["info"]["instances"][0] == 0
    other = Pipeline(load_manifest(m), quiet=True)
    other.setup(shared)
    a, b = first.run_batch(range(6)), other.run_batch(range(6))
    assert np.array_equal(a.seg, b.seg) and a.records[0]["labels"]["region_class"] == b.records[0]["labels"]["region_class"]
    # a cached classifier left unreadable (a disk filled mid-write) is trained again, to the same labels
    (cached,) = (tmp_path / "cache" / "region_classifiers").glob("*/classifier.json")
    cached.write_text("{")
    again = Pipeline(load_manifest(m), quiet=True)
    again.setup()
    assert np.array_equal(again.run_batch(range(6)).seg, a.seg) and json.loads(cached.read_text())["key"] == shared["stage[1]"]["info"]["key"]
