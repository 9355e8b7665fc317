"""What ships inside the package: the shapes-32 generator and the shapes feature network."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import synth, write_manifest
from synth.plugins import load_registry

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"


def test_shipped_model_is_small_safetensors_with_a_card():
    reg = load_registry()
    assert "shapes-32" in reg.models
    folder = Path(reg.resolve_model("builtin:shapes-32"))
    weights = sorted(w.relative_to(folder).as_posix() for w in folder.rglob("*.safetensors"))
    assert weights[-1] == "unet/diffusion_pytorch_model.safetensors"
    # the quickstart's head and region classifier
    assert sorted(w.split("/")[0] for w in weights[:-1]) == ["pixelheads", "region_classifiers"]
    assert all(w.endswith(("/head.safetensors", "/classifier.safetensors")) for w in weights[:-1])
    weights = [folder / w for w in weights[-1:]]
    assert weights[0].stat().st_size <= 10 * 2**20
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    card = (folder / "README.md").read_text()
    assert "Training time" in card and "Final loss" in card and "[fit]" in card
    info = json.loads((folder / "fit.json").read_text())
    assert info["steps_done"] >= 1000


def test_every_shipped_shapes_model_is_safetensors_with_its_recipe():
    """shapes-32-wide and shapes-32-gpu (stronger, slower) and shapes-32-tags (conditioned on the
    kinds a scene shows) ship beside shapes-32 under the same rules."""
    reg = load_registry()
    assert {"shapes-32", "shapes-32-wide", "shapes-32-gpu", "shapes-32-tags"} <= set(reg.models)
    for name in ("shapes-32", "shapes-32-wide", "shapes-32-gpu", "shapes-32-tags"):
        folder = Path(reg.resolve_model(f"builtin:{name}"))
        unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
        assert unet.is_file() and unet.stat().st_size <= 20 * 2**20, name
        assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt")), name
        info = json.loads((folder / "fit.json").read_text())
        assert info["finished"] and info["recipe_sha256"], name
        assert "[fit]" in (folder / "README.md").read_text(), name


def test_half_precision_weights_load_as_float32_on_cpus():
    """shapes-32-gpu's weights are stored in fp16 (half the bytes); the generator computes in fp32."""
    import torch
    from safetensors import safe_open

    from synth_diffusers.config import DiffusersConfig
    from synth_diffusers.loading import load_pipeline

    folder = Path(load_registry().resolve_model("builtin:shapes-32-gpu"))
    with safe_open(folder / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    pipe = load_pipeline(str(folder), DiffusersConfig(model=str(folder)), torch.float32)
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}
    assert sum(p.numel() for p in pipe.unet.parameters()) == json.loads((folder / "fit.json").read_text())["parameters"]


def test_quickstart_style_run_on_the_shipped_model(tmp_path):
    m = write_manifest(
        tmp_path,
        """
[dataset]
name = "q"
output = "out"
num_samples = 8
shard_size = 4

[generator]
name = "diffusers"
model = "builtin:shapes-32"
steps = 4

[[stage]]
name = "generate"
""",
    )
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["num_samples"] == 8
    assert info["generator"]["model"] == "builtin:shapes-32" and info["generator"]["license"] == "apache-2.0"


def test_feature_network_recognises_real_scenes():
    from synth_shapes.featurenet import FeatureNet, confident, presence_labels
    from synth_shapes.world import render_many

    net = FeatureNet()
    images, masks = render_many(0, range(200), 32, 0.5, "test")
    feats, probs = net.embed(images)
    assert feats.shape == (200, 128) and probs.shape == (200, 3)
    per_class_acc = ((probs > 0.5) == presence_labels(masks)).mean()
    assert per_class_acc > 0.85
    # Noise is not a scene: far fewer confident labels than on real scenes.
    noise = np.random.default_rng(0).integers(0, 255, (200, 32, 32, 3), dtype=np.uint8)
    assert confident(net.embed(noise)[1]).mean() < confident(probs).mean()


def test_quickstart_head_ships_with_the_model(monkeypatch, tmp_path):
    """A fresh machine (empty cache) finds the quickstart's head bundled with shapes-32 under the
    same key training would give, so `make demo` labels at once instead of training first."""
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline
    import synth_pixelhead.stages as stages

    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "empty-cache"))
    bundled = list((ROOT / "plugins/synth_shapes/models/shapes-32/pixelheads").glob("*/head.json"))
    assert len(bundled) == 1
    made_with = json.loads(json.loads(bundled[0].read_text())["generator"])["diffusers"]
    import diffusers

    if made_with != diffusers.__version__:
        pytest.skip(f"the bundled head was made with diffusers {made_with}, this is {diffusers.__version__}: the key differs, the quickstart trains")
    pipe = Pipeline(load_manifest(MANIFESTS / "quickstart.toml"))
    pipe.generator.setup()
    step, head = next((s, st) for s, st in pipe.steps if s.name == "pixelhead")
    monkeypatch.setattr(stages.PixelHead, "_train", lambda *a: pytest.fail("trained instead of using the bundled head"))
    head.setup()
    assert head.head_source == "bundled"
    assert len(head.info["calibration"]["label_uncertainty"]) == 1024
    assert not (tmp_path / "empty-cache").exists()  # nothing copied, nothing trained


def test_quickstart_region_classifier_ships_with_the_model(monkeypatch, tmp_path):
    """The quickstart's region classifier ships beside its head under the key training would
    give it (the annotations, classes, seed and its settings; not the generator): a fresh machine
    classes at once, and without the model's copy it would train."""
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline
    import synth_regionclass.stage as stage

    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "empty-cache"))
    bundled = list((ROOT / "plugins/synth_shapes/models/shapes-32/region_classifiers").glob("*/classifier.json"))
    assert len(bundled) == 1
    pipe = Pipeline(load_manifest(MANIFESTS / "quickstart.toml"), quiet=True)
    pipe.generator.setup()
    rc = next(st for s, st in pipe.steps if s.name == "region_class")
    with monkeypatch.context() as m:
        m.setattr(stage, "train_classifiers", lambda *a: pytest.fail("trained instead of using the bundled classifier"))
        rc.setup()
    assert rc.info["key"][:32] == bundled[0].parent.name and sum(rc.info["instances"]) > 0
    assert not (tmp_path / "empty-cache").exists()  # nothing copied, nothing trained
    monkeypatch.setattr(pipe.generator, "bundled", lambda kind: [])
    with monkeypatch.context() as m:  # without the model's copy it would train, under the same key
        m.setattr(stage, "train_classifiers", lambda *a: pytest.fail("stop"))
        with pytest.raises(pytest.fail.Exception, match="stop"):
            rc.setup()


@pytest.mark.parametrize(
    "model, stages",
    [("shapes-32", ["fit-shapes-32.toml", "fit-shapes-32-stage2.toml", "fit-shapes-32-stage3.toml"]), ("shapes-32-gpu", ["fit-shapes-32-gpu.toml", "fit-shapes-32-gpu-2.toml"])],
)
def test_the_fit_manifests_are_the_recipe_of_the_shipped_model(model, stages):
    """manifests/<stages> rerun exactly the recipe that made builtin:<model>: the last stage's
    recipe hash (its starting weights' sha256 included) is the one the model recorded, each stage
    starts from the folder the one before writes, and the last started after as many steps as
    the one before it runs."""
    from synth.manifest import load_manifest
    from synth_diffusers.fit import _recipe_hash, read_fit_config

    manifests = [load_manifest(MANIFESTS / name) for name in stages]
    cfgs = [read_fit_config(m) for m in manifests]
    folder = Path(load_registry().resolve_model(f"builtin:{model}"))
    info = json.loads((folder / "fit.json").read_text())
    assert _recipe_hash(manifests[-1], cfgs[-1], info["init_from"]) == info["recipe_sha256"]
    assert cfgs[0].init_from is None
    for before, after in zip(cfgs, cfgs[1:]):
        assert Path(after.init_from).name == Path(before.output).name
    if len(stages) == 1:
        assert info["init_from"] is None
    else:
        assert Path(info["init_from"]["path"]).name == Path(cfgs[-2].output).name
        assert info["init_from"]["steps"] == cfgs[-2].steps


def test_the_tag_model_is_its_manifests_recipe_from_the_shipped_shapes_32():
    """builtin:shapes-32-tags: manifests/fit-shapes-32-tags.toml from builtin:shapes-32's weights,
    its tag tokens shipped beside the UNet (safetensors), the UNet in fp16."""
    from safetensors import safe_open

    from synth.manifest import load_manifest
    from synth_diffusers.fit import _recipe_hash, read_fit_config

    m = load_manifest(MANIFESTS / "fit-shapes-32-tags.toml")
    cfg = read_fit_config(m)
    folder = Path(load_registry().resolve_model("builtin:shapes-32-tags"))
    info = json.loads((folder / "fit.json").read_text())
    assert cfg.init_from == "builtin:shapes-32" and Path(info["init_from"]["path"]).name == "shapes-32"
    assert _recipe_hash(m, cfg, info["init_from"]) == info["recipe_sha256"] and info["finished"]
    assert json.loads((folder / "tags" / "tags.json").read_text())["tags"] == ["circle", "square", "triangle"]
    with safe_open(folder / "unet" / "diffusion_pytorch_model.safetensors", "pt") as st:
        assert {st.get_slice(k).get_dtype() for k in st.keys()} == {"F16"}
    with safe_open(folder / "tags" / "embeddings.safetensors", "pt") as st:
        assert len(list(st.keys())) >= 1


@pytest.mark.parametrize("manifest", sorted(p.name for p in MANIFESTS.glob("fit-*.toml")))
def test_every_fit_manifest_validates(manifest):
    """The fit manifests no test runs (the prepared GPU leases among them) still load and validate,
    so a lease is not lost to a misspelt key."""
    from synth.manifest import load_manifest
    from synth_diffusers.fit import read_fit_config

    m = load_manifest(MANIFESTS / manifest)
    assert read_fit_config(m).steps > 0


def test_the_shipped_shortcut_classifier_reads_the_colour_not_the_shape():
    """builtin:circle-or-square-red-blue (manifests/discover.toml audits it) was trained where
    circles were mostly red and squares mostly blue: right with the colours as trained, wrong
    with them swapped."""
    from types import SimpleNamespace

    from conftest import bench_module
    from synth_classify.classifiers import TorchClassifier, TorchClassifierConfig

    bench = bench_module("discover")
    reg = load_registry()
    clf = TorchClassifier(TorchClassifierConfig(path="builtin:circle-or-square-red-blue", device="cpu"), SimpleNamespace(registry=reg, resolve_path=Path))
    clf.setup()
    assert clf.classes == ["circle", "square"] and clf.image_size == (32, 32)
    x, y, masks = bench.scenes(600, "test", 0)
    for agree, low, high in ((1.0, 0.95, 1.0), (0.0, 0.0, 0.1)):
        shown = bench.plant(x, masks, y, "colour", agree, np.random.default_rng(1))
        assert low <= float((clf.logits(shown).argmax(1) == y).mean()) <= high, agree
    assert (Path(reg.resolve_model("builtin:circle-or-square-red-blue", "classifier")) / "README.md").is_file()


def test_a_builtin_classifier_is_not_a_generator_model(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 2\n[generator]\nname = "diffusers"\nmodel = "builtin:circle-or-square-red-blue"\n')
    res = synth("validate", m)
    assert res.returncode == 2 and "builtin:circle-or-square-red-blue is a classifier, not a model" in res.stderr, res.stderr
