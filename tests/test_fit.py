"""`synth fit`: a tiny real training run, checkpoints, resume after a kill, a loadable pipeline."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import synth, write_manifest

FIT = """
[dataset]
name = "shapes"
num_samples = 64
shard_size = 64

[run]
batch_size = 32

[[stage]]
name = "shapes"
size = 16

[fit]
output = "{output}"
block_out_channels = [8, 16]
attention_levels = [1]
norm_num_groups = 4
steps = {steps}
batch_size = 4
warmup_steps = 2
checkpoint_every = {every}
grid_samples = 4
grid_steps = 2
"""


def _fit_manifest(tmp_path, output="model", steps=6, every=3, name="fit.toml"):
    return write_manifest(tmp_path, FIT.format(output=output, steps=steps, every=every), name)


def test_tiny_fit_writes_a_standard_diffusers_pipeline(tmp_path):
    from diffusers import DDPMPipeline

    m = _fit_manifest(tmp_path)
    res = synth("fit", "-q", m)
    assert res.returncode == 0, res.stderr
    assert "finished: 6 steps" in res.stderr
    assert "loss trend: too few steps to tell" in res.stderr  # 6 steps: no plateau verdict yet
    out = tmp_path / "model"
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not list(out.glob("unet/*.bin"))
    pipe = DDPMPipeline.from_pretrained(out)
    assert pipe.unet.config.sample_size == 16 and pipe.unet.config.block_out_channels == [8, 16]
    info = json.loads((out / "fit.json").read_text())
    assert info["steps_done"] == 6 and info["finished"] and info["num_training_images"] == 64
    assert np.isfinite(info["final_loss_mean_last_200"])
    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "[fit]" in card and "Training time" in card
    assert sorted(p.name for p in (out / "progress").glob("samples-*.png")) == ["samples-step-0000003.png", "samples-step-0000006.png"]
    assert (out / "samples.png").exists() and (out / "loss.png").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]

    # The diffusers generator plugin uses the folder as-is.
    run = write_manifest(tmp_path, '[dataset]\nname = "g"\noutput = "gen"\nnum_samples = 3\n[generator]\nname = "diffusers"\nmodel = "model"\nsteps = 2\n', "gen.toml")
    res = synth("run", "-q", run)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "gen" / "dataset.json").read_text())["num_samples"] == 3

    # Rerunning a finished fit does nothing.
    res = synth("fit", "-q", m)
    assert res.returncode == 0 and "nothing to do" in res.stderr


@pytest.mark.slow
def test_fit_killed_and_resumed_equals_an_uninterrupted_run(tmp_path):
    from safetensors.numpy import load_file

    # torch's CPU results depend on the thread count: the reference and the first run pin it, and
    # the resumed run (no flag) takes it from the checkpoint, whatever else the machine runs
    ref = _fit_manifest(tmp_path, output="ref", steps=30, every=5, name="ref.toml")
    assert synth("fit", "-q", "--threads", "1", ref).returncode == 0

    m = _fit_manifest(tmp_path, output="killed", steps=30, every=5)
    proc = subprocess.Popen([sys.executable, "-m", "synth", "fit", "-q", "--threads", "1", str(m)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (ckpts / "step-0000010" / "state.json").exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "fit finished before it could be killed"
    assert not (tmp_path / "killed" / "model_index.json").exists()

    res = synth("fit", "-q", m)
    assert res.returncode == 0, res.stderr
    assert "resumed from the checkpoint at step 1" in res.stderr  # 10 or 15
    a = load_file(str(tmp_path / "ref" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    losses_a = json.loads((tmp_path / "ref" / "checkpoints" / "step-0000030" / "state.json").read_text())["losses"]
    losses_b = json.loads((tmp_path / "killed" / "checkpoints" / "step-0000030" / "state.json").read_text())["losses"]
    assert losses_a == losses_b
    assert json.loads((tmp_path / "killed" / "checkpoints" / "step-0000030" / "state.json").read_text())["threads"] == 1


def test_fit_config_errors(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 4\n[[stage]]\nname = "shapes"\n', "nofit.toml")
    res = synth("fit", m)
    assert res.returncode == 2 and "fit: a [fit] table is required" in res.stderr
    bad = _fit_manifest(tmp_path, name="bad.toml")
    bad.write_text(bad.read_text().replace("steps = 6", "steps = 6\nlr = -1\nbogus = 2"))
    res = synth("fit", bad)
    assert res.returncode == 2
    assert "fit.lr: Input should be greater than 0" in res.stderr and "fit.bogus: unknown field" in res.stderr


def test_resume_with_a_changed_recipe_is_refused(tmp_path):
    m = _fit_manifest(tmp_path, steps=3, every=3)
    assert synth("fit", "-q", m).returncode == 0
    m.write_text(m.read_text().replace("batch_size = 4", "batch_size = 2"))
    res = synth("fit", "-q", m)
    assert res.returncode == 2 and "different recipe" in res.stderr
    assert synth("fit", "-q", "--overwrite", m).returncode == 0


def test_fit_continues_from_a_trained_pipeline(tmp_path):
    from safetensors.torch import load_file

    assert synth("fit", "-q", _fit_manifest(tmp_path, output="base", steps=3)).returncode == 0
    cont = FIT.format(output="cont", steps=1, every=1).replace('output = "cont"', 'output = "cont"\ninit_from = "base"\nlr = 1e-12\nema_decay = 0')
    res = synth("fit", "-q", write_manifest(tmp_path, cont, "cont.toml"))
    assert res.returncode == 0, res.stderr
    base = load_file(tmp_path / "base" / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(tmp_path / "cont" / "unet" / "diffusion_pytorch_model.safetensors")
    # one step at a negligible learning rate: the continued weights are the base weights
    assert max(float((base[k] - after[k]).abs().max()) for k in base) < 1e-6
    info = json.loads((tmp_path / "cont" / "fit.json").read_text())
    assert info["init_from"]["path"] == str(tmp_path / "base") and info["init_from"]["steps"] == 3
    assert "Continued from `base` (3 steps" in (tmp_path / "cont" / "README.md").read_text()

    wider = cont.replace("block_out_channels = [8, 16]", "block_out_channels = [8, 32]").replace('output = "cont"', 'output = "wide"')
    res = synth("fit", "-q", write_manifest(tmp_path, wider, "wide.toml"))
    assert res.returncode == 2
    assert "fit.init_from:" in res.stderr and "has a different architecture" in res.stderr.strip().splitlines()[-1]


def test_save_dtype_halves_the_saved_weights_and_the_generator_still_runs(tmp_path):
    from safetensors import safe_open

    full = _fit_manifest(tmp_path, output="full", steps=3, every=3, name="full.toml")
    half = _fit_manifest(tmp_path, output="half", steps=3, every=3, name="half.toml")
    half.write_text(half.read_text().replace("grid_steps = 2", "grid_steps = 2\nsave_dtype = \"fp16\""))
    for m in (full, half):
        # one thread for both: the default follows the machine's load, and another thread count
        # sums in another order (the last bit of a weight differs)
        res = synth("fit", "-q", "--threads", "1", m)
        assert res.returncode == 0, res.stderr
    weights = {name: tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors" for name in ("full", "half")}
    with safe_open(weights["half"], "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
        half_w = {k: f.get_tensor(k) for k in f.keys()}
    with safe_open(weights["full"], "pt") as f:
        # the same training (save_dtype is not part of the recipe), only rounded on the way out
        for k in f.keys():
            assert (f.get_tensor(k).half() == half_w[k]).all(), k
    assert weights["half"].stat().st_size < 0.6 * weights["full"].stat().st_size
    info = json.loads((tmp_path / "half" / "fit.json").read_text())
    assert info["saved_dtype"] == "fp16" and "weights saved in fp16" in (tmp_path / "half" / "README.md").read_text()
    assert info["recipe_sha256"] == json.loads((tmp_path / "full" / "fit.json").read_text())["recipe_sha256"]
    run = write_manifest(tmp_path, '[dataset]\nname = "g"\noutput = "gen"\nnum_samples = 2\n[generator]\nname = "diffusers"\nmodel = "half"\nsteps = 2\n', "gen.toml")
    res = synth("run", "-q", run)
    assert res.returncode == 0, res.stderr


def test_the_fit_thread_count_holds_over_the_reading_pipelines(tmp_path):
    """--threads wins over [run] threads, which the reading pipeline's set-up would otherwise
    apply (and which a loaded machine's default could hide): checkpoints record what ran."""
    m = _fit_manifest(tmp_path, steps=3, every=3)
    m.write_text(m.read_text().replace("batch_size = 32", "batch_size = 32\nthreads = 2"))
    res = synth("fit", "-q", "--threads", "1", m)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "model" / "checkpoints" / "step-0000003" / "state.json").read_text())["threads"] == 1
    machine = json.loads((tmp_path / "model" / "fit.json").read_text())["machine"]
    assert machine["threads"] == 1
    assert machine["accelerator"] is None and machine["autocast"] is None  # a CPU fit in fp32
    assert "on cpu (" in (tmp_path / "model" / "README.md").read_text()


def test_the_model_card_names_the_gpu_and_the_autocast_a_fit_ran_with():
    """A fit's time means little without the accelerator: the card says which, and what it kept
    before these were recorded (shipped fit.json files) still reads as it did."""
    from synth_diffusers.fit import _machine_text

    gpu = {"device": "cuda", "accelerator": "NVIDIA H200", "autocast": "bfloat16", "cpu_count": 16, "torch": "2.11.0", "threads": 16}
    assert _machine_text(gpu) == "cuda (NVIDIA H200, 16 CPU cores, torch 2.11.0, 16 threads; bfloat16 autocast)"
    old = {"device": "cpu", "cpu_count": 2, "torch": "2.14.1", "threads": 2}
    assert _machine_text(old) == "cpu (2 CPU cores, torch 2.14.1, 2 threads)"
