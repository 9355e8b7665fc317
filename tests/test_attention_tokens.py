"""Attribution tokens (issue 33, few labels spent on identity): one token per class, optimised on
a few labelled images so its attention matches their masks (OVAM), read in place of the class's
own tokens; the model and its images are untouched."""

import json

import numpy as np
import pytest

from conftest import diffusers_manifest, synth
from test_attention import CLASSES, _members, _OneLayer

CALIBRATE = 'calibrate = { source = { name = "shapes", split = "val", size = 16 }, count = 4 }'


@pytest.fixture(scope="module")
def tag_model(tmp_path_factory):
    from tiny_models import build_tag_model

    return build_tag_model(tmp_path_factory.mktemp("tagmodel") / "tags16")


def test_a_fitted_token_finds_the_pixels_its_class_own_token_misses():
    """One cross-attention layer built by hand: pixels of region A query e1 (the class's own
    token's key), pixels of region B query e2, which no token of the condition keys. Labelled with
    region B, the fit moves the class's token from e1 to where B's queries point: its map, read
    as the labeller reads it, is B."""
    import torch
    from diffusers.models.attention_processor import Attention

    from synth_diffusers.attention import AttentionCapture, AttentionSpec, optimise_tokens, token_shares

    attn = Attention(query_dim=4, cross_attention_dim=4, heads=1, dim_head=4)
    with torch.no_grad():
        attn.to_q.weight.copy_(torch.eye(4))
        attn.to_k.weight.copy_(torch.eye(4))
    e = torch.eye(4) * 2  # small enough that no share saturates: every pixel still has a gradient
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[0:2], b[2:4, 0:2] = True, True
    query_b = e[2] + e[0] / 4  # leans to the null token a little, so the class's own token takes under half
    hidden = torch.where(torch.from_numpy(a.reshape(1, 16, 1)), e[1], torch.where(torch.from_numpy(b.reshape(1, 16, 1)), query_b, e[0]))
    context = torch.stack([e[0], e[1]])[None]  # slot 0: null (keys e0); slot 1: the class's own token (keys e1)
    positions = torch.tensor([[[False, False], [False, True]]])  # (B, C, S): class 1 holds slot 1
    with torch.no_grad(), AttentionCapture(_OneLayer(attn), AttentionSpec(), size=(4, 4), latent_size=(4, 4)) as cap:
        cap.store.positions, cap.store.collect = positions, []
        cap.active = True
        attn(hidden, encoder_hidden_states=context)
    store = cap.store
    own = store.cross[0, 1].numpy()
    assert np.array_equal(own > 0.5, a)  # the class's own token lights A, not B
    init = torch.stack([torch.zeros(4), e[1]])
    target = torch.from_numpy(np.stack([np.zeros((4, 4)), b])[None].astype(np.float32))
    weight = torch.tensor([[0.0, 1.0]])
    tokens, losses = optimise_tokens([(store, store.collect, [0])], init, target, weight, steps=200, lr=0.1)
    assert losses[-1] < 0.5 * losses[0], losses[::20]
    attn_, q, rest = store.collect[0]
    fitted = token_shares(attn_, q, rest, tokens)[0, :, 1].reshape(4, 4).detach().numpy()
    stretched = (fitted - fitted.min()) / (fitted.max() - fitted.min())
    assert np.array_equal(stretched > 0.5, b)
    # its own token read as an attribution token gives back the layer's own attention
    same = token_shares(attn_, q, rest, init)[0, :, 1].reshape(4, 4).detach().numpy()
    assert np.allclose(same, own, atol=1e-6)


def test_a_class_read_from_its_own_token_gives_the_maps_it_had(tmp_path, tag_model):
    """The tag model's own token embeddings as attribution tokens: the maps of a sample's path and
    of a noised real image are the maps without tokens (the exclusion is exact); a NaN row keeps
    the class's own tokens."""
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    m = diffusers_manifest(tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=4)
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    gen = pipe.generator
    table = gen.tag_encoder.embedding.weight.detach().float().numpy()
    own = np.full((4, table.shape[1]), np.nan, np.float32)
    own[1:] = table[1:4]  # slot k + 1 is tag k; the tags are the classes after background
    idx = [0, 1, 2]
    z, conds = gen.sample_latents(idx, 0), [gen.condition(i) for i in idx]
    images = gen.decode(z, conds, idx, 0)
    for latents in (z, None):
        plain = gen.attention(images, conds, gen.attention_spec({}), latents=latents)
        read = gen.attention(images, conds, gen.attention_spec({"tokens": own}), latents=latents)
        assert np.abs(plain.classes - read.classes).max() < 1e-5 and plain.classes.max() > 0.05
        moved = own.copy()
        moved[2] += 3.0
        moved[3] = np.nan
        other = gen.attention(images, conds, gen.attention_spec({"tokens": moved}), latents=latents)
        assert not np.allclose(other.classes[:, 2], plain.classes[:, 2], atol=1e-3)
        assert np.array_equal(other.classes[:, 3], plain.classes[:, 3])


def test_a_run_with_fitted_tokens_keeps_the_images_reports_the_fit_and_resumes_byte_identical(tmp_path, tag_model):
    """With tokens the images are the plain run's, the labels are not; a run killed after its
    first shard and run again ends with the uninterrupted run's bytes (the fit is made again,
    the same)."""
    from test_resume import _run_until

    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"\n'
    fitted = f"{CALIBRATE}\ntokens = 40\ntoken_lr = 0.05"
    manifests = {}
    for name, extra in (("plain", ""), ("a", fitted), ("killed", fitted)):
        manifests[name] = diffusers_manifest(tmp_path, tag_model, dataset=f"classes = {CLASSES}", n=12, name=f"{name}.toml", output=name, stages=stages + extra)
    outs = {}
    for name in ("plain", "a"):
        res = synth("run", manifests[name])
        assert res.returncode == 0, res.stderr
        outs[name] = _members(tmp_path / name)
    killed = tmp_path / "killed"
    assert _run_until(manifests["killed"], killed, lambda o: any(o.glob("d-*.tar")))
    res = synth("run", manifests["killed"])
    assert res.returncode == 0 and "already finished" in res.stderr, res.stderr
    assert _members(killed) == outs["a"]
    images = {k: v for k, v in outs["a"].items() if k.endswith(".png") and not k.endswith(".seg.png")}
    assert len(images) == 12 and all(outs["plain"][k] == v for k, v in images.items())
    assert any(outs["plain"][k] != v for k, v in outs["a"].items() if k.endswith(".seg.png"))
    fit = json.loads((tmp_path / "a" / "dataset.json").read_text())["reports"]["stage[1]"]["calibration"]["tokens"]
    assert fit["steps"] == 40 and fit["classes"] >= 1 and fit["loss"][1] < fit["loss"][0] and fit["queries_mib"] > 0
    assert set(fit["miou_before"]) == {"null", "threshold"}
    meta = json.loads(next(v for k, v in outs["a"].items() if k.endswith(".json")))
    assert meta["labels"]["tokens"] == 40


@pytest.mark.parametrize(
    "extra, needle",
    [
        ("tokens = 10", "tokens: optimising attribution tokens needs calibrate"),
        (f'method = "contrast"\n{CALIBRATE}\ntokens = 10', "tokens: attribution tokens are read from cross-attention; method 'contrast' has none"),
    ],
)
def test_tokens_without_labels_or_without_cross_attention_are_one_line(tmp_path, tag_model, extra, needle):
    m = diffusers_manifest(tmp_path, tag_model, dataset=f"classes = {CLASSES}", stages=f'[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"\n{extra}')
    res = synth("validate", m)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


@pytest.mark.slow
def test_stable_diffusion_tokens_read_its_class_words_and_fit_to_masks(tmp_path, models):
    """On a tiny random SD: a one-token class word read from its own hidden state gives its map
    back (the test tokenizer spells words by letter: "x" is one token, "dog" three);
    fitted to hand-drawn masks of generated samples (read along their guided paths), the tokens
    lower the loss and every class named gets one."""
    from synth.manifest import load_manifest
    from synth.pipeline import Pipeline

    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["background", "x", "dog"]', 'templates = ["a photo of a {cls}"]\nguidance_scale = 3.0')
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    gen = pipe.generator
    idx = [i for i in range(20) if gen.condition(i)["prompt"].endswith(" x")][:2]
    conds = [gen.condition(i) for i in idx]
    assert len(idx) == 2
    z = gen.sample_latents(idx, 0)
    images = gen.decode(z, conds, idx, 0)
    from synth_diffusers.attention import class_positions

    states = gen.family.unet_kwargs(conds)["encoder_hidden_states"].detach().float().numpy()
    where = class_positions(gen, conds)[0, 1]
    assert where.sum() == 1
    own = np.full((3, states.shape[-1]), np.nan, np.float32)
    own[1] = states[0][where][0]
    plain = gen.attention(images, conds, gen.attention_spec({}), latents=z)
    read = gen.attention(images, conds, gen.attention_spec({"tokens": own}), latents=z)
    assert np.abs(plain.classes - read.classes).max() < 1e-5
    masks = np.zeros((2, *images.shape[1:3]), np.int64)
    masks[:, 4:12, 4:12] = 1
    tokens, fit = gen.attention_tokens(images, conds, masks, gen.attention_spec({}), latents=list(z), background=0, steps=30, lr=0.05)
    assert np.isfinite(tokens[1]).all() and np.isnan(tokens[0]).all() and np.isnan(tokens[2]).all()
    assert fit["loss"][1] < fit["loss"][0]
