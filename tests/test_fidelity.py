"""Fidelity and diversity metrics on features: the known answers, and the reference
implementations (prdc, torch-fidelity) on the same features."""

import numpy as np
import pytest

from synth.fidelity import fid, kid, knn_radii, nearest, prdc, realism


def test_identical_sets_are_perfect_and_disjoint_sets_are_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    same = prdc(x, x.copy())
    # density: each point sits in its own sphere (distance 0) and in about k others: ~ (k + 1) / k
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0 and same["density"] == pytest.approx(4 / 3, abs=0.1)
    assert fid(x, x.copy()) == pytest.approx(0.0, abs=1e-6)
    far = prdc(x, x + 100)
    assert far["precision"] == far["recall"] == far["density"] == far["coverage"] == 0.0
    assert fid(x, x + 100) > 100**2 * 16 * 0.99


def test_prdc_equals_the_prdc_package():
    from prdc import compute_prdc

    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(400, 32)), rng.normal(size=(350, 32)) * 1.2 + 0.3
    ours = prdc(real, fake, k=5, block=64)  # small blocks: the blocked code path, many times
    theirs = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-6), name


def test_fid_and_kid_equal_torch_fidelity_on_the_same_features():
    import torch
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(600, 24)), rng.normal(size=(500, 24)) * 0.9 + 0.2
    theirs = fid_statistics_to_metric(fid_features_to_statistics(torch.from_numpy(real)), fid_features_to_statistics(torch.from_numpy(fake)), verbose=False)
    assert fid(real, fake) == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    ours, _ = kid(real, fake, subsets=5, subset_size=100, seed=0)
    tk = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=50, kid_subset_size=100, verbose=False)
    assert abs(ours - tk["kernel_inception_distance_mean"]) < 4 * tk["kernel_inception_distance_std"] + 1e-3  # random subsets differ


def test_realism_and_nearest_by_hand():
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    radii = knn_radii(real, 1)
    np.testing.assert_allclose(radii, [1, 1, 1, np.sqrt(81 + 100)], rtol=1e-6)
    score = realism(real, np.array([[0.1, 0.0], [5.0, 5.0]]), k=1)
    assert score[0] > 1 and score[1] < 1  # inside vs far; the outlier's huge sphere is ignored
    d, i = nearest(np.array([[0.9, 0.1]]), real)
    assert i[0] == 1 and d[0] == pytest.approx(np.sqrt(0.02), rel=1e-5)
