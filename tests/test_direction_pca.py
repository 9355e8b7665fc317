"""`direction` with pca: the components of what images show (h-space points of generated
samples, or inverted latents of real images), not of the i.i.d. initial noise, whose principal
components are noise directions (each explains about as much as any other)."""

import json

import numpy as np
import pytest

from conftest import diffusers_manifest, synth
from synth.reading import iter_samples

pytestmark = pytest.mark.slow


def _direction(extra):
    return f'[[stage]]\nname = "generate"\n[[stage]]\nname = "direction"\npca = 0\npca_samples = 64\nalphas = [2.0]\n{extra}\n'


def _children(out):
    samples = [s for t in sorted(out.glob("d-*.tar")) for s in iter_samples(t)]
    return {s["__key__"]: (s, json.loads(s["json"])) for s in samples}


def test_pca_takes_components_in_h_space_where_noise_has_none_and_a_saved_one_gives_the_same_images(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    m = diffusers_manifest(tmp_path, "builtin:shapes-32", n=4, shard=4, batch=4, stages=_direction('save_as = "pc0"'))
    res = synth("run", m, env={"SYNTH_CACHE_DIR": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    got = _children(tmp_path / "out")
    child = next(meta for key, (_, meta) in got.items() if key.endswith("_d0"))
    how = child["lineage"][-1]
    assert how["of"] == "hspace" and how["space"] == "h" and how["samples"] == 64
    # the share of variance the first component explains, against the initial latents' first component
    z = np.random.default_rng(0).standard_normal((64, 3 * 32 * 32))
    z -= z.mean(0)
    noise_share = np.linalg.svd(z, compute_uv=False)[0] ** 2 / (np.linalg.svd(z, compute_uv=False) ** 2).sum()
    assert how["explained"] > 1.5 * noise_share, (how["explained"], noise_share)  # noise: about 1.0x (0.040 against 0.020 here)
    parent = got[next(k for k in got if not k.endswith("_d0"))][0]
    assert not np.array_equal(got[next(k for k in got if k.endswith("_d0"))][0]["png"], parent["png"])
    # the saved direction (an h-space one, with its unit) reused by name: the same children
    again = diffusers_manifest(tmp_path, "builtin:shapes-32", n=4, shard=4, batch=4, output="again", name="again.toml",
                               stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "direction"\nsaved = "pc0"\nalphas = [2.0]\n')
    assert synth("run", again, env={"SYNTH_CACHE_DIR": str(tmp_path / "cache")}).returncode == 0
    reused = _children(tmp_path / "again")
    assert {k: s["png"] for k, (s, _) in reused.items()} == {k: s["png"] for k, (s, _) in got.items()}


def test_stable_diffusion_takes_components_in_h_space_or_of_inverted_real_images(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["a", "b"]', 'prompts = ["a cat"]', n=2, shard=2, batch=2, stages=_direction("").replace("pca_samples = 64", "pca_samples = 8"))
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    child = next(meta for key, (_, meta) in _children(tmp_path / "out").items() if key.endswith("_d0"))
    assert child["lineage"][-1]["of"] == "hspace" and child["lineage"][-1]["samples"] == 8
    source = 'pca_source = { name = "shapes", split = "train", size = 16 }\npca_samples = 8'
    m = diffusers_manifest(tmp_path, models["sd"], 'classes = ["a", "b"]', 'prompts = ["a cat"]', n=2, shard=2, batch=2, name="src.toml",
                           output="src", stages=_direction(source).replace("pca_samples = 64\n", ""))
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    child = next(meta for key, (_, meta) in _children(tmp_path / "src").items() if key.endswith("_d0"))
    how = child["lineage"][-1]
    assert how["of"] == "inverted" and how["samples"] == 8 and 0 < how["explained"] <= 1


def test_pca_on_a_generator_without_h_space_says_what_it_needs(tmp_path):
    from conftest import toy_manifest

    m = toy_manifest(tmp_path, n=2, shard=2, batch=2)
    m.write_text(m.read_text() + _direction(""))
    res = synth("run", m)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "synth: error: stage 'direction'.pca: generator 'toy' has no h-space to take components in; give pca_source, images whose inverted latents they come from"
    ]
