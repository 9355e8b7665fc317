"""The Ray executor on a local Ray (2 CPUs): the same bytes as the local executor, an actor killed
mid-run replaced without loss or duplicate, a killed driver resumed, stage errors not retried."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import diffusers_manifest, synth, toy_manifest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'synth-data[ray]'")
pytestmark = pytest.mark.slow


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".json") and not p.name.startswith(".")}


def _same_output(a, b):
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], f"{name} differs"


def test_ray_writes_the_same_bytes_as_the_local_executor(tmp_path):
    m = toy_manifest(tmp_path, n=40, shard=8, batch=4)
    assert synth("run", "-q", m, "--output", tmp_path / "local").returncode == 0
    res = synth("run", m, "--executor", "ray", "-X", "actors=2", "--output", tmp_path / "ray", timeout=300)
    assert res.returncode == 0, res.stderr
    _same_output(tmp_path / "local", tmp_path / "ray")
    assert "ray actor 0:" in res.stderr and "ray actor 1:" in res.stderr  # the per-actor summary
    assert "nothing to do" in synth("run", m, "--executor", "ray", "--output", tmp_path / "ray").stderr


def test_dedup_and_selection_do_not_depend_on_the_number_of_actors(tmp_path):
    stages = '[[stage]]\nname = "generate"\n[[stage]]\nname = "dedup"\nthreshold = 0.999\n[[stage]]\nname = "select"\nkeep = 10\n'
    m = toy_manifest(tmp_path, n=24, shard=6, batch=4, extra=stages)
    assert synth("run", "-q", m, "--output", tmp_path / "local").returncode == 0
    res = synth("run", "-q", m, "--executor", "ray", "-X", "actors=2", "--output", tmp_path / "ray", timeout=300)
    assert res.returncode == 0, res.stderr
    _same_output(tmp_path / "local", tmp_path / "ray")
    assert json.loads((tmp_path / "ray" / "dataset.json").read_text())["num_samples"] == 10


def test_pixel_head_is_set_up_once_and_shipped_to_every_actor(tmp_path, models):
    """Trained by the first actor, adopted by the others: byte-identical to the local run."""
    classes = 'classes = ["background", "circle", "square", "triangle"]'
    stages = """
[[stage]]
name = "generate"
[[stage]]
name = "pixelhead"
timesteps = [5, 20]
ensemble = 2
steps = 30
batch_pixels = 256
calibration_samples = 16
cache_dir = "cache"
annotations = { source = { name = "shapes", size = 16 }, count = 4 }
[[stage]]
name = "drop_uncertain"
fraction = 0.25
"""
    m = diffusers_manifest(tmp_path, models["ddpm"], classes, "", stages, n=16, shard=4, batch=4)
    res = synth("run", m, "--executor", "ray", "-X", "actors=2", "--output", tmp_path / "ray", timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(list((tmp_path / "cache" / "pixelheads").iterdir())) == 1  # trained once
    assert synth("run", "-q", m, "--output", tmp_path / "local").returncode == 0
    _same_output(tmp_path / "local", tmp_path / "ray")


def _ray_run(m, out, env_extra=None):
    return subprocess.Popen(
        [sys.executable, "-m", "synth", "run", "-q", str(m), "--executor", "ray", "-X", "actors=2", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env_extra or {})},
    )


def _actor_pids():
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::ShardWorker"):
            pids.append(p.pid)
    return pids


def _wait(cond, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


NAP = '[[stage]]\nname = "generate"\n[[stage]]\nname = "nap"\nseconds = 0.3\n'


def test_an_actor_killed_mid_run_is_replaced_and_its_shard_made_again(tmp_path, example_plugin):
    m = toy_manifest(tmp_path, n=48, shard=8, batch=4, extra=NAP)
    assert synth("run", "-q", m, "--output", tmp_path / "local", env=example_plugin).returncode == 0
    out = tmp_path / "ray"
    proc = _ray_run(m, out, example_plugin)
    try:
        assert _wait(lambda: out.exists() and any(out.glob("toy-*.tar")) and len(_actor_pids()) == 2)
        victim = _actor_pids()[0]
        os.kill(victim, signal.SIGKILL)  # mid-shard: every shard takes ~0.6 s of naps
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    _same_output(tmp_path / "local", out)  # nothing lost, nothing twice: the same 48 samples
    info = json.loads((out / "dataset.json").read_text())
    assert info["num_samples"] == 48


def test_a_killed_driver_resumes_from_the_finished_shards(tmp_path, example_plugin):
    m = toy_manifest(tmp_path, n=48, shard=8, batch=4, extra=NAP)
    assert synth("run", "-q", m, "--output", tmp_path / "local", env=example_plugin).returncode == 0
    out = tmp_path / "ray"
    proc = _ray_run(m, out, example_plugin)
    try:
        assert _wait(lambda: out.exists() and len(list(out.glob("toy-*.tar"))) >= 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    # the local Ray dies with its driver; a shard an actor was finishing may still land meanwhile
    assert _wait(lambda: not _actor_pids(), timeout=60)
    done_before = sorted(p.name for p in out.glob("toy-*.tar"))
    assert 2 <= len(done_before) < 6
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("toy-*.tar")}
    res = synth("run", m, "--executor", "ray", "-X", "actors=2", "--output", out, env=example_plugin, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"{len(done_before)} shards were already finished" in res.stderr
    assert {n: t for n, t in mtimes.items()} == {p.name: p.stat().st_mtime_ns for p in out.glob("toy-*.tar") if p.name in mtimes}
    _same_output(tmp_path / "local", out)


def test_a_stage_error_fails_the_run_at_once_naming_stage_and_samples(tmp_path, example_plugin):
    extra = '[[stage]]\nname = "generate"\n[[stage]]\nname = "boom"\nat_index = 10\n'
    m = toy_manifest(tmp_path, n=24, shard=4, batch=2, extra=extra)
    t0 = time.monotonic()
    res = synth("run", "-q", m, "--executor", "ray", "-X", "actors=2", env=example_plugin, timeout=300)
    assert res.returncode == 1
    line = res.stderr.strip().splitlines()[-1]
    assert line == "synth: error: stage[1] 'boom' (synth-example-plugin 0.3.1) failed on samples s00000010..s00000011: RuntimeError: kaboom at index 10"
    assert time.monotonic() - t0 < 120  # no retry loop
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_memory_output_is_refused_for_ray(tmp_path):
    res = synth("run", toy_manifest(tmp_path), "--executor", "ray", "--output", "memory://x/y")
    assert res.returncode == 2 and "memory:// output lives in one process" in res.stderr.strip().splitlines()[-1]


def test_asking_for_ray_without_ray_is_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from synth.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    res = CliRunner().invoke(main, ["run", str(toy_manifest(tmp_path)), "--executor", "ray"])
    assert res.exit_code == 2
    assert res.output.strip() == "synth: error: executor 'ray': needs Ray, which is not installed: pip install 'synth-data[ray]'"
    m = toy_manifest(tmp_path, name="b.toml")
    m.write_text(m.read_text().replace("[run]", '[run]\nexecutor = "rayy"'))
    res = CliRunner().invoke(main, ["validate", str(m)])
    assert res.exit_code == 2 and "run.executor: unknown executor 'rayy'; did you mean 'ray'?" in res.output
