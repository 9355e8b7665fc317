"""synth discover (issue 35): on a classifier built to read one known attribute (the image's
mean red), the top direction found in the generator's h-space moves that attribute and flips
the decision; a rerun writes the same bytes; the saved direction, reused by the `direction`
operator, makes the strips' images; the page renders in a real browser; bad input fails in
one line."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ALPHAS = [-1.0, 0.0, 1.0]


def mean_red_classifier(folder: Path, classes=("circle", "square"), size=(32, 32)) -> Path:
    """A small_cnn whose second logit is 8 x (the image's max-pooled mean red - its median on
    real shapes scenes): 'square' means 'redder than usual', whatever the shapes are."""
    import torch
    from synth_classify.classifiers import save_classifier, small_cnn
    from synth_shapes.world import render_many

    net = small_cnn(torch, len(classes), width=4, depth=1).eval()
    with torch.no_grad():
        conv, bn, lin = net[0], net[1], net[-1]
        for p in (conv.weight, conv.bias, lin.weight, lin.bias, bn.bias, bn.running_mean):
            p.zero_()
        bn.weight.fill_(1.0)
        bn.running_var.fill_(1.0)
        conv.weight[0, 0, 1, 1], conv.bias[0] = 1.0, 1.0  # red in [-1, 1], plus 1: ReLU keeps it
        images, _ = render_many(0, range(100))
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        median = float(net[:-1]((x - 0.5) / 0.5)[:, 0].median())
        lin.weight[1, 0], lin.bias[1] = 8.0, -8.0 * median
    return save_classifier(net, folder, list(classes), size, width=4, depth=1)


MANIFEST = """
[dataset]
name = "red"
output = "out/red"
num_samples = {n}
seed = 0
classes = ["background", "circle", "square", "triangle"]

[generator]
name = "{generator}"
{model}
{generator_extra}

{stages}

[discover]
classifier = {{ name = "torch", path = "{classifier}" }}
target = "{target}"
samples = 12
candidates = 3
hspace = {{ block = "up0", until = 0.5 }}
alphas = {alphas}
show = 2
strip_images = 3
probe = {{ name = "shapes" }}
"""


def _manifest(folder: Path, classifier: str = "red-clf", target: str = "square", generator: str = "diffusers", stages: str = '[[stage]]\nname = "generate"', n: int = 12, name: str = "manifest.toml") -> Path:
    model = 'model = "builtin:shapes-32"' if generator == "diffusers" else ""
    extra = 'scheduler = "ddim"\nsteps = 8' if generator == "diffusers" else ""
    return write_manifest(folder, MANIFEST.format(n=n, generator=generator, model=model, generator_extra=extra, stages=stages,
                                                  classifier=classifier, target=target, alphas=json.dumps(ALPHAS)), name)


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    root = tmp_path_factory.mktemp("discover")
    mean_red_classifier(root / "red-clf")
    manifest = _manifest(root)
    res = synth("discover", manifest, "-q", "-o", root / "first", timeout=600)
    assert res.returncode == 0, res.stderr
    return root, json.loads((root / "first" / "discover.json").read_text())


def test_the_top_direction_moves_mean_red_and_flips_the_decision(found):
    root, result = found
    top = result["directions"][0]
    strip = np.load(root / "first" / "strips" / f"{top['name']}.npy")  # (images, steps, H, W, 3)
    assert strip.shape[:2] == (3, len(ALPHAS))
    red = strip[..., 0].astype(float).mean((2, 3))
    assert (red[:, -1] > red[:, 1] + 5).all() and (red[:, 0] < red[:, 1] - 5).all()  # redder one way, less red the other
    p = np.array(top["probabilities"])
    assert (p[:, -1] > p[:, 0]).all()
    assert ((p[:, 0] < 0.5) & (p[:, -1] > 0.5)).any()  # the strip crosses the decision
    assert top["flip_rate"] >= 0.5
    assert top["effect"] > max(result["candidate_effects"][c] for c in result["order"][1:])  # ranked first for a reason
    assert set(top["changed"]) == {"kind", "colour", "size", "position", "count", "background"}
    assert top["moves"] in ("colour", "background")  # what mean red is made of, named by the shapes probe
    # random directions of the same step: the yardstick, moving the decision and that attribute less
    base = result["baseline"]["up0"]
    assert base["directions"] == 2 and set(base["changed"]) == set(top["changed"])
    assert abs(base["effect"]) < top["effect"] / 3
    assert base["changed"][top["moves"]] < top["changed"][top["moves"]]
    saved = Path(os.environ["SYNTH_CACHE_DIR"]) / "directions" / f"{top['name']}.npy"
    assert saved.is_file() and (root / "first" / "directions" / f"{top['name']}.json").is_file()
    meta = json.loads(saved.with_suffix(".json").read_text())
    assert meta["space"] == "h" and meta["hspace"] == {"block": "up0", "until": 0.5, "start": 0.0} and meta["target"] == "square"
    # the counterfactuals the flip rate was judged on: each strip image beside its least flipping step
    assert result["localise"] is False and result["where"] == {}
    from synth_discover.page import CELL, LABEL

    assert Image.open(root / "first" / top["counterfactuals"]).size == (2 * CELL, LABEL + 3 * (CELL + LABEL))
    assert len(top["counterfactual_steps"]) == len(top["counterfactual_flipped"]) == 3
    assert all(abs(s) in (0.25, 0.5, 0.75, 1.0) for s in top["counterfactual_steps"])


def test_a_rerun_writes_the_same_bytes(found):
    root, _ = found
    res = synth("discover", root / "manifest.toml", "-q", "-o", root / "again", timeout=600)
    assert res.returncode == 0, res.stderr
    first = sorted(p.relative_to(root / "first") for p in (root / "first").rglob("*") if p.is_file())
    again = sorted(p.relative_to(root / "again") for p in (root / "again").rglob("*") if p.is_file())
    assert first == again and len(first) >= 8
    for rel in first:
        assert (root / "first" / rel).read_bytes() == (root / "again" / rel).read_bytes(), rel


def test_the_direction_operator_makes_the_strips_images_from_the_saved_direction(found):
    root, result = found
    name = result["directions"][0]["name"]
    stages = f'[[stage]]\nname = "generate"\n\n[[stage]]\nname = "direction"\nsaved = "{name}"\nalphas = {json.dumps(ALPHAS)}\nkeep_parent = false'
    manifest = _manifest(root, stages=stages, n=3, name="counterfactuals.toml")
    res = synth("run", manifest, "-q", "--output", root / "cf")
    assert res.returncode == 0, res.stderr
    images = {}
    for shard in sorted((root / "cf").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png") and ".seg." not in member.name:
                    images[member.name[: -len(".png")]] = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
    strip = np.load(root / "first" / "strips" / f"{name}.npy")
    assert len(images) == 3 * len(ALPHAS)
    for i, key in enumerate(result["strip_keys"]):
        for j in range(len(ALPHAS)):
            assert np.array_equal(images[f"{key}_d{j}"], strip[i, j]), (key, j)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_the_page_renders_in_a_real_browser(found, tmp_path):
    from playwright.sync_api import sync_playwright

    root, result = found
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((root / "first" / "discover.html").as_uri())
        assert page.inner_text("#target") == "square"
        assert page.locator("tr.direction").count() == 2
        assert page.locator("#row-1 .moves").inner_text() == result["directions"][0]["moves"]
        assert page.locator("img.strip").count() == page.locator("img.counterfactuals").count() == 2
        assert page.locator("#direction-1 tr.baseline td").count() == len(result["attributes"])
        assert float(page.inner_text("#baseline-effect-up0")) == round(result["baseline"]["up0"]["effect"], 3)
        assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        shot = Path(os.environ.get("SYNTH_REPORT_SCREENSHOT_DIR", tmp_path)) / "discover.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == [] and shot.stat().st_size > 10_000


@pytest.mark.parametrize("case, expected", [
    ("classes", "discover.classifier: its classes ['cat', 'dog'] do not match [dataset].classes"),
    ("size", "discover.classifier: it takes 16x16 images, the generator makes 32x32"),
    ("target", "discover.target: 'dog' is not one of the classifier's classes (circle, square)"),
    ("toy", "has no h-space (capability hspace)"),
    ("empty", "no images in"),
    ("no-table", "no [discover] table"),
])
def test_bad_input_fails_in_one_line(found, tmp_path, case, expected):
    root, _ = found
    classifier, target, generator, stages = str(root / "red-clf"), "square", "diffusers", '[[stage]]\nname = "generate"'
    if case == "classes":
        classifier = str(mean_red_classifier(tmp_path / "pets", classes=("cat", "dog")))
        target = "dog"
    elif case == "size":
        classifier = str(mean_red_classifier(tmp_path / "small", size=(16, 16)))
    elif case == "target":
        target = "dog"
    elif case == "toy":
        generator = "toy"
    elif case == "empty":
        (tmp_path / "nothing").mkdir()
        stages = '[[stage]]\nname = "folder"\npath = "nothing"'
    manifest = _manifest(tmp_path, classifier=classifier, target=target, generator=generator, stages=stages)
    if case == "no-table":
        manifest.write_text(manifest.read_text().split("[discover]")[0])
    res = synth("discover", manifest, "-q", "-o", tmp_path / "out")
    assert res.returncode == 2, res.stderr
    assert expected in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_attfind_ranks_greedily_on_the_images_not_yet_explained():
    from synth_discover.discover import attfind_order

    # candidate 0 moves images 0-1 a lot and flips them; 1 moves the same images less (and 2-3 a
    # little); 2 moves only images 2-3
    effects = np.array([[3.0, 3.0, 0.0, 0.0], [2.0, 2.0, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0]])
    flips = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], bool)
    assert attfind_order(effects, np.zeros_like(flips)) == [0, 1, 2]  # by the mean over all images
    assert attfind_order(effects, flips) == [0, 2, 1]  # once 0 explains images 0-1, 2 leads on the rest
    flips[0] = False
    assert attfind_order(effects, flips) == [0, 1, 2]  # 0 explains nothing: all images still count


def test_candidates_are_the_shared_gradient_signed_to_raise_the_target():
    from synth_discover.discover import candidates

    rng = np.random.default_rng(0)
    shared = rng.standard_normal(50)
    grads = np.stack([s * shared + 0.3 * rng.standard_normal(50) for s in rng.uniform(0.5, 3.0, 40)])  # one direction, many scales
    out = candidates(grads, 3)
    assert out.shape == (3, 50) and np.allclose(np.sqrt((out**2).mean(1)), 1.0, atol=1e-5)
    assert np.corrcoef(out[0], shared)[0, 1] > 0.95  # the first is the shared direction, pointing up the gradients
    assert candidates(-grads, 1)[0] @ shared < 0


def test_where_the_classifier_looks_is_the_fewest_places_holding_most_of_its_gradient():
    from synth_discover.discover import where_it_looks

    grads = np.zeros((3, 3, 6, 6))
    grads[0, :, 2, 3] = 1.0  # image 0: one hot place (squared norm 3)
    grads[0, 0, 5, 0] = 0.1  # and a faint one: the hot place alone holds over 90%
    grads[1] = 0.3  # image 1: spread thin everywhere (a background tint): nearly all places
    grads[2, 0, 0, 0], grads[2, 0, 5, 5] = 1.0, 0.5  # image 2: 0.8 and 0.2 of the mass: both kept
    where = where_it_looks(grads)
    assert where.shape == (3, 1, 6, 6) and where.dtype == np.float32
    assert {tuple(k) for k in np.argwhere(where[0, 0] == 1)} == {(y, x) for y in (1, 2, 3) for x in (2, 3, 4)}  # grown by one
    assert where[1].mean() > 0.9
    assert where[2, 0, 0, 0] == where[2, 0, 5, 5] == 1 and where[2].sum() == 8
    assert where_it_looks(np.zeros((1, 2, 3, 3))).sum() == 0  # no gradient: nothing to keep
    assert where_it_looks(np.ones((2, 4, 8))) is None  # a conditioning's tokens have no places


def test_a_tie_between_attributes_goes_to_the_one_that_changes_first():
    from synth_discover.discover import name_of

    attrs = ["kind", "colour", "background"]
    ends = {"kind": 0.2, "colour": 1.0, "background": 1.0}  # a tint of everything saturates both
    assert name_of([ends], attrs) == "colour"  # no smaller step: the probe's order
    assert name_of([ends, {"kind": 0.1, "colour": 0.9, "background": 1.0}], attrs) == "background"
    assert name_of([ends, {"kind": 0.1, "colour": 0.9, "background": 0.9}, {"kind": 0.9, "colour": 0.2, "background": 0.5}], attrs) == "background"
    assert name_of([{"kind": 0.5, "colour": 0.4, "background": 0.4}, {"kind": 0.0, "colour": 1.0, "background": 1.0}], attrs) == "kind"


def _two_shapes(square_side: float, circle_colour=(0.9, 0.1, 0.1)) -> np.ndarray:
    """A grey scene with a disc (radius 6.5) and a square of the given side, drawn by hand."""
    im = np.full((32, 32, 3), 0.5)
    yy, xx = np.mgrid[0:32, 0:32] + 0.5
    im[(yy - 9) ** 2 + (xx - 9) ** 2 < 6.5**2] = circle_colour
    im[(abs(yy - 23) < square_side / 2) & (abs(xx - 23) < square_side / 2)] = (0.1, 0.2, 0.9)
    return (im * 255).astype(np.uint8)[None]


def test_the_shapes_probe_follows_the_main_shape_through_an_edit():
    """A square growing past the disc makes it the largest shape, but the disc (the main shape
    before) did not change: no attribute of it counts as changed. Recoloured, it does."""
    from synth_shapes.probe import ShapesProbe, ShapesProbeConfig

    probe = ShapesProbe(ShapesProbeConfig(), None)
    probe.setup()
    before, grown = probe.measure(_two_shapes(10)), probe.measure(_two_shapes(14))
    assert (before["kind"], grown["kind"]) == ([1], [2])  # the largest kind did change: circle -> square
    assert not any(v[0] for v in probe.changed(before, grown).values())
    recoloured = probe.changed(before, probe.measure(_two_shapes(10, circle_colour=(0.1, 0.8, 0.2))))
    assert [a for a, v in recoloured.items() if v[0]] == ["colour"]


def test_the_shapes_probe_reads_size_as_the_radius_a_shape_is_drawn_with():
    """A triangle redrawn as a square of the same radius, where it was, changed its kind only
    (by area the square is twice as large); the same square 30% wider changed its size too."""
    from synth_shapes.probe import ShapesProbe, ShapesProbeConfig
    from synth_shapes.world import _inside

    def scene(kind, r):
        yy, xx = (np.mgrid[0:128, 0:128] + 0.5) / 128  # drawn at 4x and averaged, as the world draws
        im = np.where(_inside(kind, xx, yy, 0.5, 0.5, r, 0.3)[..., None], (0.9, 0.2, 0.1), (0.3, 0.5, 0.4))
        return (im.reshape(32, 4, 32, 4, 3).mean((1, 3)) * 255).astype(np.uint8)[None]

    probe = ShapesProbe(ShapesProbeConfig(), None)
    probe.setup()
    triangle = probe.measure(scene(3, 0.28))
    assert list(triangle["kind"]) == [3]
    assert [a for a, v in probe.changed(triangle, probe.measure(scene(2, 0.28))).items() if v[0]] == ["kind"]
    assert [a for a, v in probe.changed(triangle, probe.measure(scene(2, 0.36))).items() if v[0]] == ["kind", "size"]
