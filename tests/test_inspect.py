"""`synth inspect` and `synth preview` on real output."""

import json

import numpy as np
from PIL import Image

from conftest import synth, toy_manifest

PIPELINE = '[[stage]]\nname = "generate"\n[[stage]]\nname = "bright_seg"\nlevels = 3\n'


def test_inspect_folder_and_shard(tmp_path):
    assert synth("run", toy_manifest(tmp_path, n=10, shard=4)).returncode == 0
    out = tmp_path / "out"
    res = synth("inspect", out, "--json", "-n", "2")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["num_samples"] == 10 and r["num_shards"] == 3
    assert r["samples_per_shard"] == {"toy-000000.tar": 4, "toy-000001.tar": 4, "toy-000002.tar": 2}
    assert r["fields"] == {"cls": 10, "json": 10, "latent.npy": 10, "png": 10} and r["fields_consistent"]
    assert r["class_counts"] == {"circle": 4, "square": 3, "triangle": 3}
    assert r["image_sizes"] == {"32x32": 2}
    assert [e["key"] for e in r["examples"]] == ["s00000000", "s00000001"]
    text = synth("inspect", out / "toy-000001.tar").stdout
    assert text.startswith(f"{out / 'toy-000001.tar'}: 4 samples in 1 shards")
    assert "s00000004" in text


def test_inspect_bad_path(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    res = synth("inspect", tmp_path / "x.txt")
    assert res.returncode == 2 and "expected a .tar shard or an output folder" in res.stderr
    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 100)
    res = synth("inspect", tmp_path / "broken.tar")
    assert res.returncode == 2 and "not a readable shard" in res.stderr


def test_preview_overlays_segmentation(tmp_path, example_plugin):
    assert synth("run", toy_manifest(tmp_path, n=6, shard=6, extra=PIPELINE), env=example_plugin).returncode == 0
    out = tmp_path / "out"
    res = synth("preview", out, "-o", tmp_path / "grid.png", "--columns", "3", "--cell", "64", "--style", "overlay")
    assert res.returncode == 0, res.stderr
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    assert grid.shape[1] == 3 * 64 and grid.shape[0] > 2 * 64  # two rows of tiles, then the legend
    # The first tile differs from the raw image where seg > 0 (overlay), and equals it where seg == 0.
    from synth.reading import iter_samples
    import io

    s = next(iter_samples(out / "toy-000000.tar"))
    img = np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB"))
    seg = np.asarray(Image.open(io.BytesIO(s["seg.png"])))
    tile = grid[:64, :64][::2, ::2]  # 32 -> 64 nearest upscaling
    assert (seg > 0).any() and (seg == 0).any()
    np.testing.assert_array_equal(tile[seg == 0], img[seg == 0])
    assert (tile[seg > 0] != img[seg > 0]).any()


def test_preview_rejects_zero_columns_or_cells(tmp_path):
    assert synth("run", "-q", toy_manifest(tmp_path, n=2, shard=2)).returncode == 0
    for flag, value in (("--columns", "0"), ("--cell", "0"), ("--count", "0")):
        res = synth("preview", tmp_path / "out", "-o", tmp_path / "g.png", flag, value)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert f"Invalid value for '{flag}'" in res.stderr
    assert not (tmp_path / "g.png").exists()


def test_the_cards_reading_snippet_keeps_class_ids(tmp_path, example_plugin):
    """The dataset card's own code, run as a user would paste it, gives class ids, not colours."""
    import os
    import re

    assert synth("run", "-q", toy_manifest(tmp_path, n=4, shard=4, extra=PIPELINE), env=example_plugin).returncode == 0
    out = tmp_path / "out"
    card = (out / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    cwd = os.getcwd()
    os.chdir(out)
    try:
        scope: dict = {}
        exec(code, scope)
        image, seg, meta = next(iter(scope["ds"]))
    finally:
        os.chdir(cwd)
    assert image.shape == (32, 32, 3) and seg.shape == (32, 32) and seg.dtype == np.uint8 and seg.max() <= 2
    assert meta["key"] == "s00000000"


def test_preview_shows_each_image_beside_its_labels_with_a_legend(tmp_path, example_plugin):
    import io

    from synth.card import palette
    from synth.reading import iter_samples

    assert synth("run", "-q", toy_manifest(tmp_path, n=3, shard=3, extra=PIPELINE), env=example_plugin).returncode == 0
    out = tmp_path / "out"
    assert synth("preview", out, "-o", tmp_path / "side.png", "--columns", "3", "--cell", "32").returncode == 0
    grid = np.asarray(Image.open(tmp_path / "side.png").convert("RGB"))
    assert grid.shape[1] == 3 * (2 * 32 + 4 + 4) and grid.shape[0] > 32 + 4  # tiles, then the legend
    s = next(iter_samples(out / "toy-000000.tar"))
    img = np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB"))
    seg = np.asarray(Image.open(io.BytesIO(s["seg.png"])))
    np.testing.assert_array_equal(grid[:32, :32], img)  # the image, untouched
    np.testing.assert_array_equal(grid[:32, 36:68], np.array(palette(3), np.uint8)[seg])  # its label map
    legend = grid[36:]
    for colour in palette(3)[1:]:  # every class colour appears in the legend
        assert (legend == colour).all(-1).any()
