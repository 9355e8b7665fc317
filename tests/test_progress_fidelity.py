"""bench/progress_fidelity.py reads back exactly the samples synth fit drew into its grids."""

import numpy as np
from conftest import bench_module


def test_the_grid_tiles_are_the_samples_synth_fit_drew(tmp_path):
    from synth_diffusers.plots import image_grid

    rng = np.random.default_rng(0)
    samples = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)  # 20: the last row half empty
    image_grid(samples).save(tmp_path / "grid.png")
    got = bench_module("progress_fidelity").tiles(tmp_path / "grid.png")
    assert got.shape == (24, 32, 32, 3)
    assert np.array_equal(got[:20], samples)
    assert (got[20:] == 255).all()  # the grid's white filler, not a sample
