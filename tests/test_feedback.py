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
