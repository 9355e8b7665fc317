"""A hub id loads from the local Hugging Face cache offline (as a GPU user's cached
stable-diffusion checkpoint does), and its resolved commit is the generator's weight identity;
a local model's weights are hashed once per process, however often the fingerprint is asked."""

import json
import pathlib
import shutil

import pytest

from conftest import diffusers_manifest
from synth.manifest import load_manifest
from synth.pipeline import Pipeline

pytestmark = pytest.mark.slow

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _generator(tmp_path, model, extra=""):
    m = diffusers_manifest(tmp_path, model, 'classes = ["cat", "dog"]', f'templates = ["a {{cls}}"]\n{extra}')
    pipe = Pipeline(load_manifest(m), quiet=True)
    pipe.setup()
    return pipe.generator


def test_a_cached_hub_model_loads_offline_and_is_identified_by_its_commit(tmp_path, models, monkeypatch):
    repo = tmp_path / "hub" / "models--tiny-org--tiny-sd"
    shutil.copytree(models["sd"], repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    gen = _generator(tmp_path, "tiny-org/tiny-sd")
    ident = json.loads(gen.fingerprint())
    assert ident["hub_commit"] == COMMIT and ident["model"] == "tiny-org/tiny-sd"
    assert not any(k.startswith("sha256:") for k in ident)


def test_a_local_models_weights_are_read_once(tmp_path, models, monkeypatch):
    gen = _generator(tmp_path, models["sd"])
    opened = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        if str(file).endswith(".safetensors"):
            opened.append(pathlib.Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    first, second = gen.fingerprint(), gen.fingerprint()
    assert first == second and len(opened) == 1
    assert any(k.startswith("sha256:") for k in json.loads(first))
