"""What ships inside the package: the shapes-32 generator and the shapes feature network."""

import json

import numpy as np

from conftest import synth, write_manifest
from synth.plugins import load_registry


def test_shipped_model_is_small_safetensors_with_a_card():
    reg = load_registry()
    assert "shapes-32" in reg.models
    folder = __import__("pathlib").Path(reg.resolve_model("builtin:shapes-32"))
    weights = list(folder.rglob("*.safetensors"))
    assert [w.relative_to(folder).as_posix() for w in weights] == ["unet/diffusion_pytorch_model.safetensors"]
    assert weights[0].stat().st_size <= 10 * 2**20
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    card = (folder / "README.md").read_text()
    assert "Training time" in card and "Final loss" in card and "[fit]" in card
    info = json.loads((folder / "fit.json").read_text())
    assert info["steps_done"] >= 1000


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
