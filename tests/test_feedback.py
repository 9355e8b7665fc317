"""Feedback-guided sampling: a downstream classifier's uncertainty steers the pixel sampler;
weight 0 changes nothing, byte for byte."""

import json

import numpy as np
import pytest

from conftest import synth, write_manifest
from test_classify import _red_classifier

BASE = """
[dataset]
name = "fb"
output = "{out}"
num_samples = 8
shard_size = 8
[run]
batch_size = 8
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = 8
micro_batch = 8
{feedback}
[[stage]]
name = "generate"
"""


def _images(folder):
    from synth.reading import iter_samples, shard_paths

    return {s["__key__"]: s["png"] for p in shard_paths(folder) for s in iter_samples(p)}


def _run(tmp_path, name, feedback=""):
    m = write_manifest(tmp_path, BASE.format(out=name, feedback=feedback), f"{name}.toml")
    res = synth("run", "-q", str(m))
    assert res.returncode == 0, res.stderr
    return _images(tmp_path / name)


@pytest.mark.slow
def test_zero_weight_is_byte_identical_and_a_weight_raises_the_classifiers_uncertainty(tmp_path):
    import io

    import torch
    from PIL import Image

    folder, net = _red_classifier(tmp_path / "red")
    table = f'feedback = {{ classifier = {{ name = "torch", path = "{folder}", device = "cpu" }}, weight = {{w}} }}'
    plain = _run(tmp_path, "plain")
    zero = _run(tmp_path, "zero", table.replace("{w}", "0.0"))
    guided = _run(tmp_path, "guided", table.replace("{w}", "0.05"))
    assert zero == plain  # every image's bytes
    assert guided.keys() == plain.keys() and all(guided[k] != plain[k] for k in plain)

    def entropy(images):
        x = torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(images[k])).convert("RGB")) for k in sorted(images)])).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            p = torch.softmax(net(x), 1)
        return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())

    assert entropy(guided) > entropy(plain) + 0.05, (entropy(guided), entropy(plain))
    info = json.loads((tmp_path / "guided" / "dataset.json").read_text())
    assert info["manifest"]["text"].count("weight = 0.05") == 1


def test_a_feedback_classifier_that_is_not_there_fails_validate(tmp_path):
    m = write_manifest(tmp_path, BASE.format(out="x", feedback='feedback = { classifier = { name = "torch", path = "nowhere" }, weight = 1.0 }'))
    res = synth("validate", str(m))
    assert res.returncode == 2
    assert "generator.feedback.classifier.path:" in res.stderr and "nowhere has no classifier.json" in res.stderr, res.stderr


def _segmenter(folder):
    """The segmentation task's U-Net, briefly trained on real shapes scenes and saved as
    `synth optimise` saves its best trial's model."""
    from synth_optimise import SegmentationConfig, SegmentationTask
    from synth_shapes import render_many

    task = SegmentationTask(SegmentationConfig(steps=150, width=8, lr=3e-3), ["background", "circle", "square", "triangle"])
    x, y = render_many(0, range(64), 32, 0.5, "train")
    task.save(task.train(x, y, 0), folder, (32, 32))
    return folder


def _pixel_entropy(folder, images):
    import io

    import torch
    from PIL import Image

    from synth_optimise.task_model import TaskModelClassifier, TaskModelConfig

    clf = TaskModelClassifier(TaskModelConfig(path=str(folder), device="cpu"), type("C", (), {"resolve_path": staticmethod(lambda p: p)})())
    clf.setup()
    x = torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(images[k])).convert("RGB")) for k in sorted(images)])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        logp = torch.log_softmax(clf.differentiable(x), 1)
    return float(-(logp.exp() * logp).sum(1).mean())


@pytest.mark.slow
def test_a_segmentation_model_guides_sampling_toward_the_pixels_it_is_unsure_of(tmp_path):
    """The downstream segmenter itself (per-pixel logits) as the feedback model; "loss" needs
    masks the sampler lacks: one line."""
    folder = _segmenter(tmp_path / "seg")
    table = f'feedback = {{ classifier = {{ name = "task_model", path = "{folder}", device = "cpu" }}, weight = 0.05{{objective}} }}'
    plain = _run(tmp_path, "plain")
    guided = _run(tmp_path, "guided", table.replace("{objective}", ""))
    assert all(guided[k] != plain[k] for k in plain)
    assert _pixel_entropy(folder, guided) > _pixel_entropy(folder, plain) + 0.02, (_pixel_entropy(folder, guided), _pixel_entropy(folder, plain))
    m = write_manifest(tmp_path, BASE.format(out="loss", feedback=table.replace("{objective}", ', objective = "loss"')), "loss.toml")
    res = synth("run", "-q", str(m))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert 'objective = "loss" needs each sample\'s class; a segmentation model\'s needs masks' in res.stderr


@pytest.mark.slow
def test_feedback_guides_stable_diffusion_through_its_vae(tmp_path, models):
    """A latent model: the clean estimate is decoded inside the gradient and resized to the
    classifier's 32 px, and the images lean toward what it is unsure of."""
    from conftest import diffusers_manifest

    folder, net = _red_classifier(tmp_path / "red")
    table = f'feedback = {{ classifier = {{ name = "torch", path = "{folder}", device = "cpu" }}, weight = {{w}} }}'

    def images(name, extra=""):
        m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["cat", "dog"]', 'templates = ["a {cls}"]\n' + extra, n=4, shard=4, batch=4, name=f"{name}.toml", output=name, steps=4)
        res = synth("run", "-q", str(m))
        assert res.returncode == 0, res.stderr
        return _images(tmp_path / name)

    plain, guided = images("plain"), images("guided", table.replace("{w}", "0.5"))
    assert all(guided[k] != plain[k] for k in plain)

    def entropy(found):
        import io

        import torch
        from PIL import Image

        x = torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(found[k])).convert("RGB").resize((32, 32), Image.BILINEAR)) for k in sorted(found)]))
        with torch.no_grad():
            p = torch.softmax(net(x.permute(0, 3, 1, 2).float() / 255), 1)
        return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())

    assert entropy(guided) > entropy(plain), (entropy(guided), entropy(plain))


def test_feedback_with_a_refiner_is_refused_before_anything_loads(tmp_path):
    table = 'feedback = { classifier = { name = "torch", path = "nowhere" }, weight = 0.05 }\nrefiner = "also-nowhere"'
    m = write_manifest(tmp_path, BASE.format(out="x", feedback=table))
    res = synth("validate", str(m))
    assert res.returncode == 2 and "feedback guides the sampler's own steps; it cannot guide a refiner's" in res.stderr, res.stderr
