"""The transformers feature extractors (CLIP, DINOv2) on tiny random-weight models built here:
loading from a local folder, features computed once per sample however many stages ask,
clip_score against CLIP's own logits, and DINOv2 features driving dedup and metrics in a run."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import diffusers_manifest, synth, write_manifest
from synth.batch import Batch
from synth.plugins import load_registry
from synth.protocols import RunContext
from synth.reading import iter_samples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import build_clip, build_dinov2

    root = tmp_path_factory.mktemp("extractors")
    return {"clip": build_clip(root / "clip"), "dinov2": build_dinov2(root / "dinov2")}


def _batch(n=5, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Batch(keys=[f"s{i:08d}" for i in range(n)], images=images, records=[{"index": i} for i in range(n)])


@pytest.mark.parametrize("name, dim", [("clip", 8), ("dinov2", 16)])
def test_features_are_computed_once_per_sample_whichever_stage_asks(tiny, name, dim, monkeypatch):
    from synth import extractors

    context = RunContext(seed=0, manifest_dir=Path("."), classes=[], registry=load_registry())
    spec = {"name": name, "model": str(tiny[name]), "device": "cpu"}
    ex = extractors.get(context, spec)
    assert extractors.get(context, dict(spec)) is ex  # set up once per process
    calls = []
    embed = ex.embed
    monkeypatch.setattr(ex, "embed", lambda images: calls.append(len(images)) or embed(images))
    batch = _batch()
    first = extractors.features(context, batch, spec)
    second = extractors.features(context, batch, spec)  # a second stage asking
    assert calls == [5] and first is second
    assert first.shape == (5, dim) and first.dtype == np.float32 and np.isfinite(first).all()
    # a sample's features do not depend on its neighbours in the batch
    alone = ex.embed(batch.images[2:3])
    np.testing.assert_allclose(alone[0], first[2], atol=1e-5)


def test_clip_score_equals_clip_logits_and_drops_below_min(tiny, models, tmp_path):
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    clip = str(tiny["clip"])
    stages = f'[[stage]]\nname = "generate"\n[[stage]]\nname = "clip_score"\nextractor = {{ name = "clip", model = "{clip}", device = "cpu" }}\n'
    m = diffusers_manifest(tmp_path, models["sd"], generator='prompts = ["a red cube", "a dog"]', stages=stages, n=6, shard=6)
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    samples = [s for t in sorted((tmp_path / "out").glob("*.tar")) for s in iter_samples(t)]
    scores = np.array([json.loads(s["json"])["scores"]["clip_score"] for s in samples])
    prompts = [json.loads(s["json"])["condition"]["prompt"] for s in samples]
    # CLIP's own forward pass: logits_per_image / logit_scale is the cosine of the two embeddings
    model, tok = CLIPModel.from_pretrained(clip).eval(), CLIPTokenizer.from_pretrained(clip)
    images = np.stack([np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB")) for s in samples])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.inference_mode():
        out = model(pixel_values=x, **tok(prompts, padding=True, return_tensors="pt"))
        cos = (out.logits_per_image / model.logit_scale.exp()).diagonal().numpy()
    np.testing.assert_allclose(scores, np.round(100 * np.clip(cos, 0, None), 4), atol=2e-3)
    assert len(set(scores.tolist())) > 1, scores  # the threshold below splits them

    # a threshold between the scores drops exactly those below it, each with its value
    cut = float(np.median(scores)) + 1e-3
    m2 = diffusers_manifest(tmp_path, models["sd"], generator='prompts = ["a red cube", "a dog"]', stages=stages + f"min = {cut}\n", n=6, shard=6, name="m2.toml", output="out2")
    assert synth("run", m2).returncode == 0
    info = json.loads((tmp_path / "out2" / "dataset.json").read_text())
    assert info["num_samples"] == int((scores >= cut).sum())
    drops = json.loads((tmp_path / "out2" / "d-000000.stats.json").read_text())["dropped"]
    assert sorted(d["key"] for d in drops) == sorted(s["__key__"] for s, v in zip(samples, scores) if v < cut)
    assert all(d["reason"] == f"clip_score < min {cut:g}" for d in drops)


def test_dinov2_features_drive_dedup_and_metrics_in_a_run(tiny, tmp_path):
    dino = f'{{ name = "dinov2", model = "{tiny["dinov2"]}", device = "cpu" }}'
    body = f"""
[dataset]
name = "f"
output = "out"
num_samples = 8
shard_size = 4
classes = ["background", "circle", "square", "triangle"]
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = 3
[[stage]]
name = "generate"
[[stage]]
name = "augment"
copies = 1
hflip = 0.0
crop = [1.0, 1.0]
brightness = 0.0
contrast = 0.0
saturation = 0.0
[[stage]]
name = "dedup"
extractor = {dino}
threshold = 0.9999
[[stage]]
name = "metrics"
extractor = {dino}
reference = {{ source = {{ name = "shapes", split = "test" }}, count = 50 }}
kid_subset_size = 4
"""
    res = synth("run", write_manifest(tmp_path, body))
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    # an augment copy with nothing changed is its parent's duplicate; the parent (lower index) stays
    keys = [s["__key__"] for t in sorted((tmp_path / "out").glob("*.tar")) for s in iter_samples(t)]
    assert keys == [f"s{i:08d}" for i in range(8)], keys
    assert info["dropped_by_reason"] == {"dedup: near-duplicate (cosine >= 0.9999)": 8}
    metrics = info["metrics"]["stage[3]"]
    assert metrics["extractor"]["name"] == "dinov2" and metrics["samples"] == 8 and metrics["reference"]["samples"] == 50
    assert 0 <= metrics["precision"] <= 1 and metrics["fid"] >= 0
