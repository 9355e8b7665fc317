"""What `synth validate` can know, it says: every problem below is found before anything loads
or is written, each on its own line naming the field."""

import pytest

from conftest import synth, toy_manifest, write_manifest
from synth.errors import ManifestError
from synth.manifest import load_manifest


def _problems(path):
    with pytest.raises(ManifestError) as e:
        load_manifest(path)
    return e.value.problems


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("num_samples", "true", "dataset.num_samples: Input should be a valid integer"),
        ("num_samples", "1e12", "dataset.num_samples: Input should be a valid integer"),
        ("num_samples", "1000000000000", "dataset.num_samples: Input should be less than or equal to 100000000"),
        ("shard_size", "16.0", "dataset.shard_size: Input should be a valid integer"),
        ("seed", "false", "dataset.seed: Input should be a valid integer"),
    ],
)
def test_counts_are_strict_integers_the_output_can_hold(tmp_path, field, value, expected):
    body = {"num_samples": "20", "shard_size": "8", "seed": "0", field: value}
    m = write_manifest(tmp_path, "[dataset]\n" + "".join(f"{k} = {v}\n" for k, v in body.items()) + '[generator]\nname = "toy"\n')
    assert any(p.startswith(expected) for p in _problems(m)), _problems(m)


def test_more_shards_than_names_can_hold(tmp_path):
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 100000000\nshard_size = 10\n[generator]\nname = "toy"\n')
    (p,) = _problems(m)
    assert "make 10000000 shards; shard names hold at most 1000000 (raise shard_size)" in p


def test_huge_valid_count_plans_without_building_every_task(tmp_path):
    """The largest count that validates plans lazily: validate answers at once."""
    m = write_manifest(tmp_path, '[dataset]\nnum_samples = 100000000\nshard_size = 1000\n[generator]\nname = "toy"\n')
    res = synth("validate", m, timeout=60)
    assert res.returncode == 0 and "100000000 samples" in res.stdout


def test_threshold_on_a_score_no_earlier_stage_records(tmp_path):
    extra = '[[stage]]\nname = "generate"\n[[stage]]\nname = "threshold"\nscore = "contrats"\nmin = 0.1\n'
    (p,) = _problems(toy_manifest(tmp_path, extra=extra))
    assert p == "stage[1]: score 'contrats' is recorded by no earlier stage (recorded before this one: none); add the stage that computes it first"
    ok = extra.replace('name = "threshold"', 'name = "image_stats"\n[[stage]]\nname = "threshold"').replace("contrats", "contrast")
    load_manifest(toy_manifest(tmp_path, extra=ok, name="ok.toml"))


def test_unknown_feature_block_and_timestep(tmp_path, models):
    m = write_manifest(
        tmp_path,
        f"""
[dataset]
num_samples = 4
classes = ["a", "b"]
[generator]
name = "diffusers"
model = "{models['ddpm']}"
[[stage]]
name = "generate"
[[stage]]
name = "pixelhead"
blocks = ["mid", "up9"]
timesteps = [5, 100]
annotations = {{ source = {{ name = "shapes", size = 16 }}, count = 2 }}
""",
    )
    problems = _problems(m)
    assert f"stage[1].blocks: unknown block 'up9' ({models['ddpm']} has down0, down1, mid, up0, up1)" in problems
    assert f"stage[1].timesteps: 100 is outside 0..99 ({models['ddpm']} is trained on 100 timesteps)" in problems


def test_shards_that_do_not_exist_or_hold_too_few(tmp_path):
    shards = '[dataset]\nname = "c"\nnum_samples = {n}\n[[stage]]\nname = "shards"\nurls = "{urls}"\n'
    m = write_manifest(tmp_path, shards.format(n=3, urls="w/w-{000000..000001}.tar"), "c.toml")
    (p,) = _problems(m)
    assert p.startswith(f"stage[0].urls: no such shard {tmp_path / 'w' / 'w-000000.tar'} (and 1 more)")
    world = write_manifest(tmp_path, '[dataset]\nname = "w"\noutput = "w"\nnum_samples = 6\nshard_size = 4\n[[stage]]\nname = "shapes"\nsize = 16\n', "w.toml")
    assert synth("run", "-q", world).returncode == 0
    m = write_manifest(tmp_path, shards.format(n=7, urls="w/w-{000000..000001}.tar"), "c.toml")
    assert _problems(m) == ["stage[0]: dataset.num_samples is 7, but the 2 shards hold only 6"]


def test_missing_plugin_still_reports_the_other_problems(tmp_path):
    m = toy_manifest(tmp_path)
    m.write_text('plugins = ["not_here"]\n' + m.read_text().replace("batch_size = 4", "batch_size = -4"))
    res = synth("validate", m)
    assert res.returncode == 2
    assert "plugin 'not_here' (named in the manifest's plugins) is not installed" in res.stderr
    assert "run.batch_size: Input should be greater than 0" in res.stderr


def test_threads_setting_reaches_torch(tmp_path, models):
    """[run] threads / --threads set torch's intra-op threads; the summary says how many."""
    from conftest import diffusers_manifest

    m = diffusers_manifest(tmp_path, models["ddpm"], n=2, shard=2, batch=2)
    m.write_text(m.read_text().replace("[run]", "[run]\nthreads = 1"))
    res = synth("run", m)
    assert res.returncode == 0 and "1 threads)" in res.stderr
    res = synth("run", "--overwrite", "--threads", "2", m)
    assert res.returncode == 0 and "2 threads)" in res.stderr
    bad = synth("run", "--threads", "0", m)
    assert bad.returncode == 2 and "Invalid value for '--threads'" in bad.stderr
    res = synth("run", "--overwrite", "--threads", "auto", m)
    assert res.returncode == 0 and " threads)" in res.stderr
    bad = synth("run", "--threads", "many", m)
    assert bad.returncode == 2 and "'many' is neither a count of at least 1 nor 'auto'" in bad.stderr
    m.write_text(m.read_text().replace("threads = 1", "threads = 1.5"))
    res = synth("validate", m)
    assert res.returncode == 2 and res.stderr.strip().endswith("run.threads: a count of at least 1, or \"auto\" (got 1.5)"), res.stderr


def test_default_threads_are_the_same_on_every_run(monkeypatch):
    """Not the load: torch's CPU bytes depend on the count, and two runs must agree."""
    from synth import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: 3.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads() == 4 and threads.resolve_threads(None) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert threads.default_threads() == 4
    assert threads.resolve_threads("auto") == 1 and threads.resolve_threads(2) == 2


def test_auto_threads_leave_room_for_other_load(monkeypatch):

    from synth import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    for busy, expected in ((0.1, 2), (1.2, 1), (7.0, 1)):
        monkeypatch.setattr(threads, "busy_cores", lambda: busy)
        assert threads.auto_threads() == expected


def test_busy_cores_from_two_readings_of_proc_stat(monkeypatch):
    import os

    from synth import threads

    assert threads._cpu_times() is None or threads._cpu_times()[1] > 0  # readable where it exists
    readings = iter([(1000, 5000), (1150, 5200)])  # 150 of 200 jiffies busy in the window
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert threads.busy_cores() == pytest.approx(1.5)
