"""The shapes world's oracle segmenter: the shipped weights reproduce their recorded test mIoU,
and shape fidelity sees geometry (real scenes against other real scenes score 1.0 within noise;
blurred or deformed real scenes score lower)."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from synth_shapes.oracle import WEIGHTS, Oracle, label_agreement, shape_fidelity, worst_confusions  # noqa: E402
from synth_shapes.world import render_many  # noqa: E402


@pytest.fixture(scope="module")
def oracle():
    return Oracle()


def test_shipped_oracle_reproduces_its_recorded_test_miou(oracle):
    card = json.loads(WEIGHTS.with_suffix(".json").read_text())["test"]
    images, masks = render_many(0, range(card["scenes"]), 32, card["difficulty"], card["split"])
    got = label_agreement(oracle, images, masks)
    assert got["miou"] == pytest.approx(card["miou"], abs=1e-4)
    for name, iou in card["iou"].items():
        assert got["iou"][name] == pytest.approx(iou, abs=1e-4)
    assert card["miou"] >= 0.9


def test_fidelity_is_one_for_real_scenes_and_lower_for_blurred_or_deformed_ones(oracle):
    from PIL import Image, ImageFilter

    real, _ = render_many(0, range(400), 32, 0.5, "test")
    other, _ = render_many(1, range(400), 32, 0.5, "test")
    same = shape_fidelity(oracle, other, real)["fidelity"]
    assert same == pytest.approx(1.0, abs=0.03)

    blurred = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(1.2))) for im in other])
    rng = np.random.default_rng(0)
    deformed = []
    for im in other:  # each pixel taken from a random neighbour up to 2 px away: outlines melt
        yy, xx = np.mgrid[:32, :32]
        dy, dx = rng.integers(-2, 3, (2, 32, 32))
        deformed.append(im[np.clip(yy + dy, 0, 31), np.clip(xx + dx, 0, 31)])
    blur = shape_fidelity(oracle, blurred, real)["fidelity"]
    deform = shape_fidelity(oracle, np.stack(deformed), real)["fidelity"]
    assert blur < same - 0.1 and deform < same - 0.1, (same, blur, deform)


def test_label_agreement_says_which_class_a_labeller_takes_for_which(oracle):
    images, _ = render_many(0, range(60), 32, 0.5, "test")
    labels, _ = oracle.predict(images)
    labels[labels == 2] = 1  # a labeller that calls every square a circle
    got = label_agreement(oracle, images, labels)
    assert got["taken_for"]["square"]["circle"] == 1.0 and got["taken_for"]["square"]["square"] == 0.0
    assert got["taken_for"]["circle"]["circle"] == 1.0 and got["iou"]["triangle"] == 1.0
    assert got["iou"]["square"] == 0.0
    assert worst_confusions(got["taken_for"]) == "square as circle 1.00"
