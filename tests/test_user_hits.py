"""What a new user hit (issue 31): bad input handled in one line with nothing written, and runs
that never publish wrong data."""

import io
import json
import multiprocessing
import os
import tarfile
import time

import numpy as np
import pytest

from conftest import diffusers_manifest, synth, toy_manifest, write_manifest


def _one_line(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert all(n in lines[0] for n in needles), lines[0]


# -- non-finite numbers ------------------------------------------------------------------------
def test_an_inf_direction_is_refused_before_anything_is_written(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["ddpm"], stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "direction"\npca = 0\nalphas = [inf]')
    for command in ("validate", "run"):
        _one_line(synth(command, m), "stage[1].alphas[0]", "finite number")
    assert not (tmp_path / "out").exists()


def test_latents_that_overflow_are_dropped_with_their_reason(tmp_path, models):
    """alphas = [1e30]: the children's latents overflow float16 (latent.npy) to inf; they would
    decode to black images, so they are dropped with the reason and never written."""
    np.save(tmp_path / "w.npy", np.ones((3, 16, 16), np.float32))
    m = diffusers_manifest(tmp_path, models["ddpm"], n=4, shard=4, stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "direction"\nfile = "w.npy"\nalphas = [1e30]\nkeep_norm = false\nkeep_parent = true')
    res = synth("run", m)
    assert res.returncode == 0, res.stderr
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["num_samples"] == 4  # the parents
    assert info["dropped_by_reason"] == {"synth: latent is not finite (inf or NaN as float16 stores it)": 4}


def test_a_sample_that_cannot_be_encoded_publishes_no_shard_and_the_rerun_fails_the_same_way(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import synth.engine as engine
    from synth.cli import main

    real = engine.encode_sample

    def encode(key, *args, **kwargs):
        if key == "s00000010":
            raise ValueError("Out of range float values are not JSON compliant")
        return real(key, *args, **kwargs)

    monkeypatch.setattr(engine, "encode_sample", encode)
    m = toy_manifest(tmp_path, n=16, shard=8, batch=4)
    out = tmp_path / "out"
    for _ in range(2):
        res = CliRunner().invoke(main, ["run", "-q", str(m)])
        assert res.exit_code == 1 and "sample s00000010: cannot encode" in res.output
        assert not (out / "toy-000001.tar").exists() and not (out / "toy-000001.stats.json").exists()
        assert not list(out.glob(".toy-*tmp*")) and not (out / "dataset.json").exists()
    assert not (out / ".synth.lock").exists()


# -- images of every depth -----------------------------------------------------------------------
def test_a_16_bit_grayscale_image_keeps_its_content(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(folder / "deep.png")
    assert Image.open(folder / "deep.png").mode.startswith("I")
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 1\n[[stage]]\nname = "folder"\npath = "imgs"\n')
    assert synth("run", m).returncode == 0
    with tarfile.open(next((tmp_path / "out").glob("*.tar"))) as tar:
        png = tar.extractfile(next(n for n in tar.getnames() if n.endswith(".png"))).read()
    got = np.asarray(Image.open(io.BytesIO(png)))
    assert got.shape == (32, 32, 3) and np.array_equal(got[..., 0], got[..., 2])
    assert np.abs(got[..., 0].astype(int) - np.round(ramp / 257).astype(int)).max() <= 1
    assert got.min() == 0 and got.max() >= 250  # the whole range, not a flat white image


# -- references, sweeps, reports ------------------------------------------------------------------
def test_a_reference_of_another_size_fails_validate(tmp_path):
    m = write_manifest(tmp_path, """
[dataset]
num_samples = 8
[[stage]]
name = "shapes"
size = 32
[[stage]]
name = "realism"
reference = { source = { name = "shapes", split = "test", size = 64 }, count = 16 }
""")
    _one_line(synth("validate", m), "stage[1].reference: images are 64x64, the samples 32x32")


def test_sweep_with_a_malformed_or_refused_value_creates_nothing(tmp_path):
    m = toy_manifest(tmp_path, extra='[[stage]]\nname = "generate"\n[[stage]]\nname = "metrics"\nreference = { source = { name = "shapes", split = "test", size = 32 }, count = 8 }\nkid_subset_size = 4\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    _one_line(synth("sweep", m, "--set", "dataset.seed=1,,2"), "empty value")
    _one_line(synth("sweep", m, "--set", "dataset.seed=1,-3"), "dataset.seed")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_sweep_values_are_swept_once(tmp_path):
    from synth.grid import parse_set

    assert parse_set("dataset.seed=1,2,1,2") == ("dataset.seed", [1, 2])


@pytest.mark.parametrize("content", ["{}", "not json", '{"name": "x", "num_samples": 3, "shards": [], "classes": [], "manifest": {}}'])
def test_report_on_a_folder_that_is_not_a_finished_run_writes_nothing(tmp_path, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset.json").write_text(content)
    res = synth("report", out)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "dataset.json" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json"]


def test_commands_that_read_an_output_take_file_urls(tmp_path):
    m = toy_manifest(tmp_path, n=4, shard=4)
    assert synth("run", "-q", m, "--output", f"file://{tmp_path}/url-out").returncode == 0
    url = f"file://{tmp_path}/url-out"
    assert synth("inspect", url).returncode == 0
    assert synth("preview", url, "-o", tmp_path / "p.png").returncode == 0 and (tmp_path / "p.png").is_file()
    assert synth("report", url).returncode == 0 and (tmp_path / "url-out" / "report.html").is_file()
    res = synth("inspect", "s3://bucket/ds")
    assert res.returncode == 2 and "local folder" in res.stderr


def test_no_run_leaves_its_lock_behind(tmp_path):
    m = toy_manifest(tmp_path, n=4, shard=4)
    assert synth("run", "-q", m).returncode == 0
    assert not (tmp_path / "out" / ".synth.lock").exists()
    (tmp_path / "other.toml").write_text(m.read_text().replace("num_samples = 4", "num_samples = 5"))
    res = synth("run", tmp_path / "other.toml")  # refused: another manifest's output
    assert res.returncode == 2 and not (tmp_path / "out" / ".synth.lock").exists()


# -- Ray -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_unreachable_ray_address_fails_in_one_line_within_a_minute(tmp_path):
    m = toy_manifest(tmp_path, n=4, shard=4)
    t0 = time.monotonic()
    res = synth("run", m, "--executor", "ray", "-X", "address=127.0.0.1:1", timeout=120)
    _one_line(res, "ray: cannot join 127.0.0.1:1")
    assert time.monotonic() - t0 < 60
    _one_line(synth("run", m, "--executor", "ray", "-X", "address=10.255.255.1:6379", "-X", "connect_timeout=2", timeout=120), "cannot join 10.255.255.1:6379")


def test_ray_options_in_run_are_named_with_their_table(tmp_path):
    m = toy_manifest(tmp_path, n=4, shard=4)
    m.write_text(m.read_text().replace("batch_size = 4", "batch_size = 4\naddress = \"auto\""))
    _one_line(synth("validate", m), "run.address", "[run.ray]")


def test_ray_places_one_actor_per_gpu_by_default():
    from synth.manifest import RunConfig
    from synth_ray.executor import RayConfig, RayExecutor

    place = lambda cfg, res, tasks=100: RayExecutor(RunConfig(), RayConfig(**cfg))._placement(res, tasks)  # noqa: E731
    assert place({}, {"CPU": 16, "GPU": 4}) == (4, 1.0)  # never two actors on one GPU unasked
    assert place({}, {"CPU": 16}) == (16, 0.0)
    assert place({"gpus_per_worker": 0.5}, {"CPU": 16, "GPU": 2}) == (4, 0.5)
    assert place({"actors": 8}, {"CPU": 16, "GPU": 4}) == (4, 1.0)  # actors never exceed the GPUs
    assert place({"gpus_per_worker": 0}, {"CPU": 16, "GPU": 4}) == (16, 0.0)
    assert place({}, {"CPU": 16, "GPU": 4}, tasks=2) == (2, 1.0)
    with pytest.raises(Exception, match="has 0 GPUs"):
        place({"gpus_per_worker": 1}, {"CPU": 16})


# -- the dataset phase, killed at each of its file events ----------------------------------------
SELECTING = '[[stage]]\nname = "generate"\n[[stage]]\nname = "select"\nkeep = 10\n'


def _killed_at(manifest: str, out: str, event: int, log: str) -> None:
    """In a fresh process: run the manifest, counting the file events of its dataset phase (each
    atomic write, shard commit, removal), and exit at once, as a kill would, at number ``event``."""
    import synth.engine as engine
    import synth.storage as storage
    import synth.writer as writer
    from synth.manifest import load_manifest

    seen = {"phase": False, "n": 0}

    def event_after(fn):
        def wrapped(*args, **kwargs):
            result = fn(*args, **kwargs)
            if seen["phase"]:
                seen["n"] += 1
                with open(log, "a") as fh:
                    fh.write(f"{seen['n']} {fn.__name__}\n")
                if seen["n"] == event:
                    os._exit(9)
            return result

        return wrapped

    real_stages = engine.dataset_stages

    def phase(*args, **kwargs):
        seen["phase"] = True
        return real_stages(*args, **kwargs)

    engine.dataset_stages = phase
    writer.write_atomic = event_after(writer.write_atomic)
    storage.write_atomic = writer.write_atomic
    writer.ShardFile.commit = event_after(writer.ShardFile.commit)
    storage.LocalStore.remove = event_after(storage.LocalStore.remove)
    storage.LocalStore.remove_all = event_after(storage.LocalStore.remove_all)
    engine.run(load_manifest(manifest), output=out, quiet=True)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.is_file()}


@pytest.mark.slow
def test_a_run_killed_at_any_file_event_of_its_dataset_phase_finishes_on_rerun(tmp_path):
    """Selection, final shards, dataset.json, the card, the candidates' removal: a kill after
    any one of them, and the rerun completes the card, removes .candidates/ and ends
    byte-identical to a run never killed."""
    m = toy_manifest(tmp_path, n=24, shard=8, batch=4, extra=SELECTING)
    ref = tmp_path / "ref"
    assert synth("run", "-q", m, "--output", ref).returncode == 0
    expected = _files(ref)
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "events.log"
    proc = ctx.Process(target=_killed_at, args=(str(m), str(tmp_path / "count"), 10**6, str(log)))
    proc.start()
    proc.join(300)
    events = len(log.read_text().splitlines())
    assert events >= 8  # three final shards (table, stats, commit each), dataset.json, card, removal
    for k in range(1, events + 1):
        out = tmp_path / f"killed-{k}"
        p = ctx.Process(target=_killed_at, args=(str(m), str(out), k, str(tmp_path / f"log-{k}")))
        p.start()
        p.join(300)
        assert p.exitcode == 9, (k, p.exitcode)
        res = synth("run", "-q", m, "--output", out)
        assert res.returncode == 0, (k, res.stderr)
        assert not (out / ".candidates").exists(), k
        assert _files(out) == expected, k


# -- regenerate, operators' keys and classes --------------------------------------------------------
def _samples_of(out):
    samples = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, field = member.name.partition(".")
                samples.setdefault(key, {})[field] = tar.extractfile(member).read()
    return samples


def test_views_of_inverted_images_regenerate_and_a_compose_sample_is_refused_before_any_model_loads(tmp_path, models):
    import shutil

    from PIL import Image

    from synth_shapes.world import render_many

    model = tmp_path / "model"
    shutil.copytree(models["ddpm"], model)
    (tmp_path / "real").mkdir()
    for i, image in enumerate(render_many(0, range(4), 16, split="test")[0]):
        Image.fromarray(image).save(tmp_path / "real" / f"{i}.png")
    inverted = '[[stage]]\nname = "folder"\npath = "real"\n[[stage]]\nname = "invert"\nmethod = "ddim"\n[[stage]]\nname = "views"\nk = 1\nsigma = 0.3\n'
    m = diffusers_manifest(tmp_path, model, n=4, shard=4, stages=inverted, output="inv")
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    samples = _samples_of(tmp_path / "inv")
    view = "s00000001_v0"
    assert [op["op"] for op in json.loads(samples[view]["json"])["lineage"]] == ["read", "invert", "views"]
    res = synth("regenerate", tmp_path / "inv", view, "-o", tmp_path / "again.png")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "again.png").read_bytes() == samples[view]["png"]

    Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 4)).save(tmp_path / "mask.png")
    composing = '[[stage]]\nname = "generate"\n[[stage]]\nname = "compose"\nmask_file = "mask.png"\n'
    m = diffusers_manifest(tmp_path, model, n=4, shard=4, stages=composing, output="comp", name="comp.toml")
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    composed = next(k for k, s in _samples_of(tmp_path / "comp").items() if json.loads(s["json"])["lineage"][-1]["op"] == "compose")
    shutil.rmtree(model)  # a refusal that needs no model must not try to load one
    _one_line(synth("regenerate", tmp_path / "comp", composed), composed, "not one decode of its latent", "'compose'")
    _one_line(synth("regenerate", tmp_path / "inv", "s00000002"), "'invert'")


def test_interpolate_keys_outside_the_run_and_compose_classes_out_of_range_fail_validate(tmp_path, models):
    m = diffusers_manifest(tmp_path, models["ddpm"], n=4, stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "interpolate"\npairs = "keys"\nkeys = [["s00000009", "s00000001"]]')
    _one_line(synth("validate", m), "stage[1].keys", "s00000009", "not a sample of this run")
    m = diffusers_manifest(
        tmp_path, models["ddpm"], n=4, dataset='classes = ["background", "circle"]', name="c.toml",
        stages='[[stage]]\nname = "generate"\n[[stage]]\nname = "attention"\n[[stage]]\nname = "compose"\nmask_classes = [1, 5]',
    )
    res = synth("validate", m)
    assert res.returncode == 2 and "stage[2].mask_classes: class id 5 is not one of the 2 classes" in res.stderr
