import numpy as np

from synth.fidelity import knn_radii, pairwise_sq_dists, prdc


def test_pairwise_distances_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    brute = ((a[:, None] - b[None]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_sq_dists(a, b, block=2), brute, atol=1e-9)
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_allclose(knn_radii(x, 1), [1, 1, 2, 4])


def test_prdc_on_known_distributions():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 2))
    same = prdc(real, rng.normal(size=(500, 2)))
    assert same["precision"] > 0.9 and same["recall"] > 0.9 and 0.8 < same["density"] < 1.2
    # Fakes collapsed onto one mode of the real data: precise, but no recall or coverage.
    collapsed = prdc(real, rng.normal(size=(500, 2)) * 0.05)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2 and collapsed["coverage"] < 0.2
    # Fakes far away: neither precise nor covering.
    far = prdc(real, rng.normal(size=(500, 2)) + 10)
    assert far["precision"] == 0.0 and far["coverage"] == 0.0


def test_iou_per_class_and_miou_on_a_hand_made_example():
    from synth.segmetrics import class_ious, confusion, miou

    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    conf = confusion(pred, truth, 4)
    assert conf.tolist() == [[3, 1, 0, 0], [0, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    ious = class_ious(pred, truth, 4)
    assert ious[0] == 3 / 4 and ious[1] == 3 / 5 and ious[2] == 0.0 and np.isnan(ious[3])
    assert abs(miou(pred, truth, 4) - (0.75 + 0.6 + 0.0) / 3) < 1e-12  # class 3 occurs nowhere
    import pytest

    with pytest.raises(ValueError, match="class id 5 outside 0..3"):
        confusion(pred + 3, truth, 4)
