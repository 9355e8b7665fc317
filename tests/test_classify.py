"""The classify stage on tiny random-weight classifiers built here: an image-classification
model whose labels map to the run's classes, and zero-shot CLIP; each sample's class is the
classifier's own argmax over the candidates; as sigma = "auto"'s labeller it calibrates views."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest
from synth.reading import iter_samples

pytestmark = pytest.mark.slow

HEAD = """
[dataset]
name = "c"
output = "out"
num_samples = 8
shard_size = 8
classes = ["background", "circle", "square", "triangle"]
[run]
batch_size = 4
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = 3
[[stage]]
name = "generate"
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import build_classifier, build_clip

    root = tmp_path_factory.mktemp("classifiers")
    return {"vit": build_classifier(root / "vit"), "clip": build_clip(root / "clip")}


def _samples(out):
    return [s for t in sorted(out.glob("*.tar")) for s in iter_samples(t)]


def _images(samples):
    return np.stack([np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB")) for s in samples])


def test_a_models_labels_map_to_the_classes_and_only_mapped_labels_compete(tiny, tmp_path):
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    m = write_manifest(tmp_path, HEAD + f'[[stage]]\nname = "classify"\nmodel = "{tiny["vit"]}"\nlabels = {{ tri = "triangle" }}\n')
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    samples = _samples(tmp_path / "out")
    records = [json.loads(s["json"]) for s in samples]
    model = AutoModelForImageClassification.from_pretrained(tiny["vit"]).eval()
    proc = AutoImageProcessor.from_pretrained(tiny["vit"])
    with torch.inference_mode():
        logits = model(**proc(images=list(_images(samples)), return_tensors="pt")).logits.numpy()
    mapped = logits[:, [0, 1, 2]]  # circle, Square, tri -> classes 1, 2, 3; "dog" maps to none
    p = np.exp(mapped - mapped.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert [r["class"] for r in records] == list(mapped.argmax(1) + 1)
    np.testing.assert_allclose([r["scores"]["class_confidence"] for r in records], p.max(1), atol=1e-4)


def test_zero_shot_clip_labels_each_image_with_its_best_prompt(tiny, tmp_path):
    # the tiny CLIP's letter tokenizer holds 16 tokens: a short prompt
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    m = write_manifest(tmp_path, HEAD + f'[[stage]]\nname = "classify"\nmethod = "zero_shot"\nprompt = "{{}}."\nextractor = {{ name = "clip", model = "{tiny["clip"]}", device = "cpu" }}\n')
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    samples = _samples(tmp_path / "out")
    model, tok = CLIPModel.from_pretrained(tiny["clip"]).eval(), CLIPTokenizer.from_pretrained(tiny["clip"])
    x = torch.from_numpy(_images(samples)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    with torch.inference_mode():
        out = model(pixel_values=(x - mean) / std, **tok([f"{c}." for c in ("circle", "square", "triangle")], padding=True, return_tensors="pt"))
    expected = out.logits_per_image.numpy().argmax(1) + 1
    assert [json.loads(s["json"])["class"] for s in samples] == list(expected)


def test_a_classifier_is_a_labeller_for_sigma_auto(tiny, tmp_path):
    views = (
        '[[stage]]\nname = "views"\nk = 2\nsigma = "auto"\n'
        f'auto = {{ labeller = {{ name = "classify", model = "{tiny["vit"]}", labels = {{ tri = "triangle" }} }}, samples = 8, views = 2, radii = [0.05, 0.3, 0.6] }}\n'
    )
    m = write_manifest(tmp_path, HEAD.replace("num_samples = 8", "num_samples = 4") + views)
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    (report,) = info["reports"].values()
    assert report["stage"] == "views" and set(report["radius"]) >= {"all"}
    assert all(r in (0.05, 0.3, 0.6) for r in report["radius"].values())
    assert info["num_samples"] == 4 * 3


@pytest.mark.parametrize(
    "stage, expected",
    [
        ('[[stage]]\nname = "classify"\nmethod = "zero_shot"\n', 'stage[1]: method = "zero_shot" needs extractor = {name = "clip", model = "..."}'),
        ('[[stage]]\nname = "classify"\nmodel = "./nowhere"\n', "stage[1].model: no such folder"),
        ('[[stage]]\nname = "classify"\nmodel = "{vit}"\nlabels = {{ tri = "triangel" }}\n', "stage[1].labels: 'triangel' is not one of [dataset].classes"),
    ],
)
def test_bad_classify_tables_fail_validate_in_one_line(tiny, tmp_path, stage, expected):
    m = write_manifest(tmp_path, HEAD + stage.format(vit=tiny["vit"]))
    res = synth("validate", m)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert expected in line, line


def test_a_model_whose_labels_are_none_of_the_classes_says_so(tmp_path):
    from tiny_models import build_classifier

    vit = build_classifier(tmp_path / "vit", labels=("cat", "dog"))
    res = synth("run", "-q", write_manifest(tmp_path, HEAD + f'[[stage]]\nname = "classify"\nmodel = "{vit}"\n'))
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "none of the model's labels (cat, dog, ...) is one of [dataset].classes; map them with labels" in line
    assert not list((tmp_path / "out").glob("*.tar")) if (tmp_path / "out").exists() else True


def _red_classifier(folder):
    """A small_cnn that reads red (pooled local means of the red channel): 'Circle' when red,
    else 'square'."""
    import torch

    from synth_classify.classifiers import save_classifier, small_cnn

    net = small_cnn(torch, 2, width=4, depth=1)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        conv, bn, lin = net[0], net[1], net[-1]
        conv.weight[0, 0] = 1.0 / 9  # channel 0 sums the red of its 3x3 window: mean red, roughly
        bn.weight.fill_(1.0)
        bn.running_var.fill_(1.0 - bn.eps)  # the identity when evaluating
        lin.weight[0, 0], lin.weight[1, 0] = 10.0, -10.0
        lin.bias[0], lin.bias[1] = -5.0, 5.0
    net.eval()
    return save_classifier(net, folder, ["Circle", "square"], (32, 32), width=4, depth=1, mean=(0, 0, 0), std=(1, 1, 1)), net


def test_a_saved_torch_classifier_labels_as_its_network_does(tmp_path):
    import torch

    folder, net = _red_classifier(tmp_path / "red")
    m = write_manifest(tmp_path, HEAD + f'[[stage]]\nname = "classify"\nclassifier = {{ name = "torch", path = "{folder}", device = "cpu" }}\n')
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    samples = _samples(tmp_path / "out")
    images = _images(samples)
    with torch.no_grad():
        logits = net(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0).numpy()
    assert [json.loads(s["json"])["class"] for s in samples] == list(logits.argmax(1) + 1)  # Circle -> 1, square -> 2


def test_a_torch_classifier_refuses_another_image_size_and_a_folder_without_its_files(tmp_path):
    folder, _ = _red_classifier(tmp_path / "red")
    (tmp_path / "empty").mkdir()
    bad = write_manifest(tmp_path, HEAD + '[[stage]]\nname = "classify"\nclassifier = { name = "torch", path = "empty" }\n', "bad.toml")
    res = synth("validate", bad)
    assert res.returncode == 2 and "stage[1].classifier.path: " in res.stderr and "has no classifier.json, classifier.safetensors" in res.stderr, res.stderr
    from synth_classify.classifiers import TorchClassifier, TorchClassifierConfig
    from pathlib import Path

    from synth.plugins import load_registry
    from synth.protocols import RunContext

    clf = TorchClassifier(TorchClassifierConfig(path=str(folder), device="cpu"), RunContext(seed=0, manifest_dir=Path("."), classes=[], registry=load_registry()))
    clf.setup()
    flat = np.zeros((2, 32, 32, 3), np.uint8)
    flat[0, ..., 0], flat[1, ..., 2] = 255, 255  # red, blue
    assert clf.classes == ["Circle", "square"] and clf.logits(flat).argmax(1).tolist() == [0, 1]  # it reads red, as built
    with pytest.raises(Exception, match="images are 16x16, it takes 32x32"):
        clf.logits(np.zeros((2, 16, 16, 3), np.uint8))
