"""The cells world: deterministic scenes with nested masks (nuclei inside cytoplasm), usable as a
source like shapes."""

import json

import numpy as np

from conftest import synth, write_manifest
from synth_shapes.cells import CELL_CLASSES, render_cells


def test_cells_are_deterministic_and_nuclei_sit_inside_cells():
    a = [render_cells(0, i) for i in range(30)]
    b = [render_cells(0, i) for i in range(30)]
    assert all((x[0] == y[0]).all() and (x[1] == y[1]).all() for x, y in zip(a, b))
    assert not (render_cells(0, 0, split="test")[0] == a[0][0]).all()  # splits differ
    for img, mask in a:
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
        if (mask == 2).any():  # a nucleus never touches the background directly on all sides
            ys, xs = np.nonzero(mask == 2)
            assert ((mask[np.clip(ys + 1, 0, 31), xs] != 0) | (mask[np.clip(ys - 1, 0, 31), xs] != 0)).mean() > 0.9
    assert sum((m == 2).any() for _, m in a) >= 25 and sum((m == 1).any() for _, m in a) == 30


def test_cells_source_writes_images_and_masks(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nname = "c"\noutput = "out"\nnum_samples = 4\nshard_size = 4\n[[stage]]\nname = "cells"\nsplit = "test"\n')
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["classes"] == list(CELL_CLASSES) and "seg.png" in info["fields"]
