"""The pixel head's region vote: each colour region of non-background pixels takes the class most
of its pixels got; background and the foreground's outline stay as the head drew them."""

import io
import json

import numpy as np

from conftest import synth
from synth.regions import colour_regions, vote_in_regions
from test_pixelhead import _head, _manifest, _samples


def _two_patches():
    """A 4x8 image: grey background column 0, a red patch in columns 1-3, a blue one in 4-7."""
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, 0] = 128
    image[:, 1:4] = (200, 20, 20)
    image[:, 4:] = (20, 20, 200)
    labels = np.zeros((4, 8), np.int64)
    labels[:, 1:4] = 1
    labels[0, 1] = labels[3, 3] = 2  # two stray pixels in the red patch
    labels[:, 4:] = 3
    labels[1:3, 5] = 1  # a stray pair in the blue patch
    return image, labels


def test_each_colour_region_takes_its_majority_and_background_stays():
    image, labels = _two_patches()
    out = vote_in_regions(image, labels, tolerance=25)
    want = np.zeros((4, 8), np.int64)
    want[:, 1:4], want[:, 4:] = 1, 3
    np.testing.assert_array_equal(out, want)
    # a background-labelled pixel inside a patch stays background, and splits nothing it touches
    labels[1, 2] = 0
    out = vote_in_regions(image, labels, tolerance=25)
    assert out[1, 2] == 0 and (out[:, 1:4][labels[:, 1:4] != 0] == 1).all()


def test_neighbours_join_only_within_the_tolerance():
    # a horizontal ramp: neighbouring columns differ by 10 in every channel
    image = np.repeat((np.arange(8) * 10).astype(np.uint8)[None, :, None], 3, axis=2).repeat(4, axis=0)
    labels = np.ones((4, 8), np.int64)
    labels[:, 6:] = 2
    regions = colour_regions(image, labels != 0, tolerance=9)
    assert len(np.unique(regions)) == 8  # every column its own region: nothing changes
    np.testing.assert_array_equal(vote_in_regions(image, labels, tolerance=9), labels)
    assert (vote_in_regions(image, labels, tolerance=10) == 1).all()  # one region: 24 pixels of 1 against 8


def test_ties_go_to_the_lower_class_and_any_class_can_be_background():
    image = np.full((2, 2, 3), 90, np.uint8)
    labels = np.array([[1, 2], [2, 1]])
    np.testing.assert_array_equal(vote_in_regions(image, labels, 0), np.ones((2, 2)))
    labels = np.array([[3, 3], [1, 0]])  # class 3 as background: 0 and 1 vote, 0 wins the tie
    np.testing.assert_array_equal(vote_in_regions(image, labels, 0, background=3), [[3, 3], [0, 0]])


def test_pixelhead_labels_come_out_voted_and_say_so(tmp_path, models):
    from PIL import Image

    m = _manifest(tmp_path, models["ddpm"], _head(extra="region_vote = { tolerance = 30 }"))
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    samples = _samples(tmp_path / "out")
    assert len(samples) == 8
    for s in samples:
        image = np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB"))
        seg = np.asarray(Image.open(io.BytesIO(s["seg.png"])))
        regions = colour_regions(image, seg != 0, 30)
        for r in np.unique(regions[regions >= 0]):
            assert len(np.unique(seg[regions == r])) == 1  # one class per region
        assert json.loads(s["json"])["labels"]["region_vote"] == 30
    # the same head (from the cache) without the vote: patchwork labels that the vote changed,
    # and the same background
    plain = _manifest(tmp_path, models["ddpm"], _head(), name="plain.toml", output="plain")
    assert synth("run", "-q", plain).returncode == 0
    seg = lambda s: np.asarray(Image.open(io.BytesIO(s["seg.png"])))  # noqa: E731
    pairs = [(seg(a), seg(b)) for a, b in zip(samples, _samples(tmp_path / "plain"))]
    assert any((a != b).any() for a, b in pairs)
    assert all(((a == 0) == (b == 0)).all() for a, b in pairs)


def test_region_vote_background_must_be_a_class(tmp_path, models):
    m = _manifest(tmp_path, models["ddpm"], _head(extra='region_vote = { background = "sky" }'))
    res = synth("run", m)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "stage[1].region_vote.background: 'sky' is not one of [dataset].classes" in line, line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.tar"))
