"""Each sample records what its pixels also depend on (torch, CUDA, the device); regenerate
names a difference there instead of refusing the sample."""

import json
import platform

import torch

from conftest import diffusers_manifest, synth
from synth.reading import iter_samples
from synth.regenerate import different_generator


def test_samples_record_the_runtime_and_regenerate_does_not_refuse_for_it(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["ddpm"], n=2, shard=2, batch=2, generator='device = "cpu"')
    assert synth("run", "-q", m).returncode == 0
    (sample, _) = list(iter_samples(next((tmp_path / "out").glob("d-*.tar"))))
    runtime = json.loads(sample["json"])["generator"]["runtime"]
    assert runtime == {"torch": torch.__version__, "cuda": torch.version.cuda, "device": f"cpu {platform.machine()}"}
    made = {"model": "m", "runtime": {**runtime, "torch": "0.0"}}
    assert different_generator(made, {"model": "m", "runtime": runtime}, ["model", "runtime"]) is None
    assert "generator model 'm'" in different_generator(made, {"model": "n", "runtime": runtime}, ["model", "runtime"])
    res = synth("regenerate", tmp_path / "out", sample["__key__"], "-o", tmp_path / "again.png")
    assert res.returncode == 0, res.stderr
