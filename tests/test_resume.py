"""Kill a real `synth run` process at several points; the rerun ends byte-identical."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import synth, write_manifest


def _manifest(tmp_path, model, samples=40, steps=40):
    return write_manifest(
        tmp_path,
        f"""
[dataset]
name = "d"
output = "out"
num_samples = {samples}
shard_size = 8

[run]
batch_size = 4

[generator]
name = "diffusers"
model = "{model}"
scheduler = "ddpm"
steps = {steps}
""",
    )


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".json", ".md") and not p.name.startswith(".")}


def _run_until(manifest, out, condition, timeout=120):
    """Start `synth run`, SIGKILL it as soon as condition(out) holds; True if it was killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth", "run", "-q", str(manifest), "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and condition(out):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_no_partial_final_shard(out):
    import tarfile

    for tar in out.glob("d-*.tar"):
        with tarfile.open(tar) as t:
            names = t.getnames()
        assert len(names) == 8 * 3, f"{tar.name} is incomplete under its final name"
        assert (out / tar.name.replace(".tar", ".stats.json")).exists()


@pytest.mark.slow
def test_killed_runs_resume_to_byte_identical_shards(tmp_path, models):
    manifest = _manifest(tmp_path, models["ddpm"])
    ref = tmp_path / "ref"
    res = synth("run", "-q", manifest, "--output", ref)
    assert res.returncode == 0, res.stderr
    expected = _files(ref)
    assert len([n for n in expected if n.endswith(".tar")]) == 5

    out = tmp_path / "killed"
    kill_points = [
        ("while the first shard is being written", lambda o: any(o.glob(".d-000000.tar.tmp-*"))),
        ("right after a shard became final", lambda o: len(list(o.glob("d-*.tar"))) >= 2),
        ("mid-shard, later on", lambda o: len(list(o.glob("d-*.tar"))) >= 3 and any(o.glob(".d-*.tar.tmp-*"))),
    ]
    killed = 0
    for what, cond in kill_points:
        if _run_until(manifest, out, cond):
            killed += 1
            _assert_no_partial_final_shard(out)
            assert not (out / "dataset.json").exists(), what
    assert killed >= 2, "the run finished before it could be killed; make it slower"

    res = synth("run", manifest, "--output", out)
    assert res.returncode == 0, res.stderr
    assert "shards were already finished" in res.stderr
    assert _files(out) == expected
    assert not list(out.glob(".*tmp-*"))


@pytest.mark.slow
def test_a_resumed_run_uses_the_threads_the_first_run_made_its_shards_with(tmp_path, models):
    """A sample's bytes depend on torch's thread count, whose default follows the machine's
    load: the folder records the count, and a resume without --threads takes it again."""
    import json

    manifest = _manifest(tmp_path, models["ddpm"], samples=24, steps=10)
    out = tmp_path / "out"
    res = synth("run", manifest, "--threads", "7")
    assert res.returncode == 0, res.stderr
    assert json.loads((out / ".synth-run.json").read_text())["threads"] == 7
    expected = _files(out)
    for name in ("d-000002.tar", "d-000002.stats.json", "dataset.json", "README.md"):
        (out / name).unlink()
    res = synth("run", manifest)
    assert res.returncode == 0, res.stderr
    assert ", 7 threads); 2 shards were already finished" in res.stderr
    assert _files(out) == expected
    res = synth("run", manifest, "--overwrite", "--threads", "1")  # asked for: that count, recorded
    assert res.returncode == 0 and json.loads((out / ".synth-run.json").read_text())["threads"] == 1


def test_auto_threads_are_chosen_once_per_output_folder(monkeypatch):
    """"auto" follows the load when a folder is new; its resume reuses the recorded count."""
    from types import SimpleNamespace

    from synth import engine, threads

    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0)
    manifest = SimpleNamespace(run=SimpleNamespace(threads="auto"))
    local, remote = SimpleNamespace(in_process=True), SimpleNamespace(in_process=False)
    new, resumed = SimpleNamespace(read_state=lambda: None), SimpleNamespace(read_state=lambda: {"threads": 2})
    assert engine.run_threads(None, manifest, local, new) == 3
    assert engine.run_threads(None, manifest, local, resumed) == 2
    assert engine.run_threads(5, manifest, local, resumed) == 5  # a count asked for wins
    assert engine.run_threads(None, manifest, remote, resumed) == "auto"  # each worker chooses
