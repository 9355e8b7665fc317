"""The data++ operators on the shipped shapes-32 model: inversion, views, interpolation,
directions, composition, augmentation; lineage, labels, determinism, regeneration."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest
from synth.manifest import load_manifest
from synth.pipeline import Pipeline
from synth.reading import iter_samples

HEAD = """
[dataset]
name = "o"
output = "out"
num_samples = {n}
shard_size = {n}
classes = ["background", "circle", "square", "triangle"]
[run]
batch_size = {n}
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = {steps}
"""


def _manifest(tmp_path, stages, n=4, steps=5, name="m.toml"):
    return write_manifest(tmp_path, HEAD.format(n=n, steps=steps) + stages, name)


def _pipeline(path):
    pipe = Pipeline(load_manifest(path))
    pipe.setup()
    return pipe


def _samples(out):
    return [s for t in sorted(out.glob("*.tar")) for s in iter_samples(t)]


def _img(s):
    return np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB")).astype(np.float64)


def _lat(s):
    return np.load(io.BytesIO(s["latent.npy"]), allow_pickle=False).astype(np.float64)


# -- inversion -----------------------------------------------------------------------------------
def test_fixed_point_inversion_beats_plain_ddim_at_equal_evaluations(tmp_path):
    from synth_diffusers.inversion import evaluations
    from synth_operators.invert import psnr
    from synth_shapes.world import render_many

    images, _ = render_many(0, range(6), 32, 0.5, "test")
    fine = _pipeline(_manifest(tmp_path, '[[stage]]\nname = "generate"\n', steps=20, name="a.toml")).generator
    coarse = _pipeline(_manifest(tmp_path, '[[stage]]\nname = "generate"\n', steps=10, name="b.toml")).generator
    ddim = fine.invert(images, [{}] * 6, {"method": "ddim"})
    fp = coarse.invert(images, [{}] * 6, {"method": "fixed_point", "iterations": 1})
    assert evaluations(20, "ddim", 0) == evaluations(10, "fixed_point", 1) == 20
    p_ddim = psnr(fine.decode(ddim, [{}] * 6, list(range(6)), 0), images)
    p_fp = psnr(coarse.decode(fp, [{}] * 6, list(range(6)), 0), images)
    assert p_fp.mean() > p_ddim.mean() + 1.0, (p_fp.mean(), p_ddim.mean())


def test_invert_stage_records_psnr_and_drops_poor_round_trips(tmp_path):
    m = write_manifest(tmp_path, HEAD.format(n=6, steps=5).replace('name = "o"', 'name = "r"') + """
[[stage]]
name = "shapes"
split = "test"
[[stage]]
name = "invert"
iterations = 2
min_psnr = 30
""")
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    samples = _samples(tmp_path / "out")
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    kept = [json.loads(s["json"]) for s in samples]
    assert all(r["scores"]["inversion_psnr"] >= 30 for r in kept)
    assert all(r["lineage"][-1]["op"] == "invert" and r["lineage"][-1]["method"] == "fixed_point" for r in kept)
    assert len(kept) + info["num_dropped"] == 6 and all("latent.npy" in s for s in samples)
    for d in json.loads((tmp_path / "out" / "r-000000.stats.json").read_text())["dropped"]:
        assert d["reason"] == "inversion_psnr < min 30 dB" and float(d["detail"].split()[0]) < 30


# -- views ---------------------------------------------------------------------------------------
def test_views_are_near_their_parent_and_nearer_for_smaller_sigma(tmp_path):
    dist = {}
    for sigma in (0.1, 0.5):
        m = _manifest(tmp_path, f'[[stage]]\nname = "generate"\n[[stage]]\nname = "views"\nk = 3\nsigma = {sigma}\n', name=f"v{sigma}.toml")
        pipe = _pipeline(m)
        b = pipe.run_batch([0, 1, 2, 3])
        assert b.keys[:4] == ["s00000000", "s00000000_v0", "s00000000_v1", "s00000000_v2"]
        parent = {k: i for i, k in enumerate(b.keys) if "_" not in k}
        lat_v, pix_v = [], []
        for i, k in enumerate(b.keys):
            if "_v" in k:
                p = parent[k.split("_")[0]]
                lat_v.append(np.linalg.norm(b.latents[i] - b.latents[p]))
                pix_v.append(np.abs(b.images[i].astype(float) - b.images[p]).mean())
                rec = b.records[i]
                assert rec["lineage"][-1] == {"op": "views", "sigma": sigma, "view": int(k[-1]), "parent": k.split("_")[0]}
                assert rec["group"] == k.split("_")[0]
        parents = [parent[k] for k in sorted(parent)]
        lat_r = np.mean([np.linalg.norm(b.latents[a] - b.latents[c]) for a in parents for c in parents if a < c])
        pix_r = np.mean([np.abs(b.images[a].astype(float) - b.images[c]).mean() for a in parents for c in parents if a < c])
        assert np.mean(lat_v) < lat_r and np.mean(pix_v) < pix_r
        dist[sigma] = (np.mean(lat_v), np.mean(pix_v))
        # norm-preserving: views of a N(0, I) latent stay at its norm on average
        assert abs(np.mean([np.linalg.norm(b.latents[i]) for i in range(len(b)) if "_v" in b.keys[i]]) / np.mean([np.linalg.norm(b.latents[p]) for p in parents]) - 1) < 0.1
    assert dist[0.1][0] < dist[0.5][0] and dist[0.1][1] < dist[0.5][1]


def test_operators_run_end_to_end_reproducibly_with_lineage_and_regeneration(tmp_path):
    stages = """
[[stage]]
name = "generate"
[[stage]]
name = "views"
k = 2
sigma = 0.3
[[stage]]
name = "interpolate"
pairs = "random"
alphas = [0.0, 0.5, 1.0]
keep_parent = false
"""
    m = _manifest(tmp_path, stages)
    assert synth("run", "-q", m).returncode == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")}
    assert synth("run", "-q", "--overwrite", m).returncode == 0
    assert first == {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")}  # byte-identical rerun
    samples = {s["__key__"]: s for s in _samples(tmp_path / "out")}
    assert len(samples) == 4 * 3 * 3
    rec = json.loads(samples["s00000001_v0_i1"]["json"])
    assert [op["op"] for op in rec["lineage"]] == ["generate", "views", "interpolate"]
    assert rec["lineage"][2]["parent"] == "s00000001_v0" and rec["group"] == "s00000001_v0"
    res = synth("regenerate", tmp_path / "out", "s00000001_v0_i1", "-o", tmp_path / "again.png")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "again.png").read_bytes() == samples["s00000001_v0_i1"]["png"]


def test_interpolation_endpoints_reproduce_the_parents_byte_for_byte(tmp_path):
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "interpolate"\npairs = "keys"\nkeys = [["s00000000", "s00000003"]]\nalphas = [0.0, 0.5, 1.0]\n'
    m = _manifest(tmp_path, stages)
    assert synth("run", "-q", m).returncode == 0
    s = {x["__key__"]: x for x in _samples(tmp_path / "out")}
    assert s["s00000000_i0"]["png"] == s["s00000000"]["png"]
    assert s["s00000000_i2"]["png"] == s["s00000003"]["png"]
    assert s["s00000000_i1"]["png"] not in (s["s00000000"]["png"], s["s00000003"]["png"])
    assert set(s) == {"s00000000", "s00000001", "s00000002", "s00000003", "s00000000_i0", "s00000000_i1", "s00000000_i2"}


# -- directions ----------------------------------------------------------------------------------
def test_a_direction_learned_from_known_pairs_moves_a_held_out_sample_the_same_way(tmp_path):
    """before: shapes-world scenes; after: the same scenes brighter. The learned direction must
    make held-out generated samples brighter too (and its negative darker)."""
    from synth_shapes.world import render_many

    images, _ = render_many(0, range(24), 32, 0.5, "val")
    for name, arr in (("before", images), ("after", np.clip(images.astype(int) + 45, 0, 255).astype(np.uint8))):
        (tmp_path / name).mkdir()
        for i, im in enumerate(arr):
            Image.fromarray(im).save(tmp_path / name / f"{i:03d}.png")
    stages = """
[[stage]]
name = "generate"
[[stage]]
name = "direction"
before = { name = "folder", path = "before" }
after = { name = "folder", path = "after" }
examples = 24
alphas = [-1.0, 1.0]
save_as = "brighter"
"""
    pipe = _pipeline(_manifest(tmp_path, stages, n=4, steps=8))
    b = pipe.run_batch([0, 1, 2, 3])
    mean = {k: img.mean() for k, img in zip(b.keys, b.images)}
    for k in ("s00000000", "s00000001", "s00000002", "s00000003"):
        assert mean[f"{k}_d1"] > mean[k] + 5, (mean[f"{k}_d1"], mean[k])
        assert mean[f"{k}_d0"] < mean[k] - 5
    reused = _pipeline(_manifest(tmp_path, '[[stage]]\nname = "generate"\n[[stage]]\nname = "direction"\nsaved = "brighter"\n', name="r.toml"))
    np.testing.assert_array_equal(reused.steps[1][1].w, pipe.steps[1][1].w)


# -- composition ---------------------------------------------------------------------------------
def test_compose_keeps_a_inside_the_mask_and_b_outside(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    pipe = _pipeline(_manifest(tmp_path, '[[stage]]\nname = "generate"\n[[stage]]\nname = "compose"\nmask_file = "mask.png"\nblend_until = 0.8\n', steps=10))
    b = pipe.run_batch([0, 1, 2, 3])
    gen = pipe.generator
    for i, k in enumerate(b.keys):
        if not k.endswith("_c0"):
            continue
        parent = b.keys.index(k[:-3])
        partner = int(b.records[i]["lineage"][-1]["partner"][1:])
        b_img = gen.decode(gen.sample_latents([partner], 0), [{}], [partner], 0)[0].astype(float)
        a_img, c = b.images[parent].astype(float), b.images[i].astype(float)
        inside, outside = slice(0, 12), slice(20, 32)  # away from the seam
        assert np.abs(c[:, inside] - a_img[:, inside]).mean() < np.abs(c[:, inside] - b_img[:, inside]).mean()
        assert np.abs(c[:, outside] - b_img[:, outside]).mean() < np.abs(c[:, outside] - a_img[:, outside]).mean()


def test_augment_transforms_labels_with_the_image_and_drops_latents(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nname = "a"\nnum_samples = 3\nshard_size = 3\n[[stage]]\nname = "shapes"\n[[stage]]\nname = "augment"\ncopies = 2\nhflip = 1.0\ncrop = [1.0, 1.0]\nbrightness = 0\ncontrast = 0\nsaturation = 0\n')
    b = _pipeline(m).run_batch([0, 1, 2])
    assert b.latents is None and len(b) == 9
    for i, k in enumerate(b.keys):
        if "_a" in k:
            p = b.keys.index(k.split("_")[0])
            np.testing.assert_array_equal(b.images[i], b.images[p][:, ::-1])
            np.testing.assert_array_equal(b.seg[i], b.seg[p][:, ::-1])


# -- policies and bad input ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "stages, expected",
    [
        ('[[stage]]\nname = "shapes"\n[[stage]]\nname = "views"\n', "stage[1]: stage 'views' works on latents, but no earlier stage gives them (stage[0] 'shapes' has none); add an invert stage before it"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "augment"\n[[stage]]\nname = "views"\n', "stage[2]: stage 'views' works on latents, but no earlier stage gives them (stage[1] 'augment' drops them)"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "prompt_edit"\ntemplates = ["a {cls} in snow"]\n', "stage[1]: stage 'prompt_edit' needs ['condition:prompt'], which builtin:shapes-32 does not offer"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "direction"\nfile = "w.npy"\n', "stage[1].file: the direction has shape (3, 8, 8), this generator's latents are (3, 32, 32)"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "interpolate"\npairs = "keys"\nkeys = [["s00000000", "s00000099"]]\nshards = "prev"\n', "stage[1].keys: partner s00000099 is not in prev"),
        ('[[stage]]\nname = "generate"\n[[stage]]\nname = "compose"\nmask_file = "small.png"\n', "stage[1].mask_file: small.png is 8x8, the generator makes 32x32 images"),
        ('[[stage]]\nname = "shapes"\n[[stage]]\nname = "invert"\n[[stage]]\nname = "views"\n', "stage[2]: stage 'views' changes what images show, so it drops the labels stage[0] 'shapes' made; add a labeller"),
    ],
)
def test_operator_bad_input_is_one_line_before_anything_is_written(tmp_path, stages, expected):
    np.save(tmp_path / "w.npy", np.zeros((3, 8, 8), np.float32))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small.png")
    prev = write_manifest(tmp_path, HEAD.format(n=2, steps=2).replace('output = "out"', 'output = "prev"'), "prev.toml")
    if "prev" in stages:
        assert synth("run", "-q", prev).returncode == 0
    m = _manifest(tmp_path, stages)
    res = synth("run", m)
    assert res.returncode == 2
    assert expected in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


def test_the_guide_positive_pairs_snippet(tmp_path):
    """The operators guide's contrastive-pairs code, run as a user would paste it, yields views of one parent."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "operators.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", readme, re.S) if "positive_pairs" in c)
    m = _manifest(tmp_path, '[[stage]]\nname = "generate"\n[[stage]]\nname = "views"\nk = 2\nsigma = 0.2\n', n=4)
    assert synth("run", "-q", m).returncode == 0
    code = code.replace("out/views/views-{000000..000001}.tar", str(tmp_path / "out" / "o-000000.tar"))
    scope: dict = {}
    exec(code, scope)
    pairs = list(scope["pairs"])
    assert len(pairs) == 4
    samples = _samples(tmp_path / "out")
    by_image = {_img(s).astype(np.uint8).tobytes(): s["__key__"].split("_")[0] for s in samples}
    for a, b in pairs:
        assert by_image[a.tobytes()] == by_image[b.tobytes()]  # both from the same group
