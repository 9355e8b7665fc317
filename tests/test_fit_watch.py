"""[fit].watch: a fit measures its samples against its training images as it goes, without
changing its weights; the history survives a resume; a stall is told from a slow climb."""

import json

import numpy as np
import pytest

from conftest import synth, write_manifest
from test_fit import FIT

pytest.importorskip("torch")

WATCH = '\nwatch = {{ extractor = "shapes", samples = 16, steps = 2{every} }}\n'


def _manifest(tmp_path, output: str, watch: str | None, steps: int = 6, every: int = 3, extra: str = ""):
    body = FIT.format(output=output, steps=steps, every=every) + extra + (WATCH.format(every=watch) if watch is not None else "")
    return write_manifest(tmp_path, body, f"{output}.toml")


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_a_watched_fit_records_its_samples_scores_and_trains_the_same_weights(tmp_path):
    plain = synth("fit", "-q", "--threads", "1", _manifest(tmp_path, "plain", None))
    watched = synth("fit", "--threads", "1", _manifest(tmp_path, "watched", ""))
    assert plain.returncode == 0 and watched.returncode == 0, watched.stderr
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "watched")
    for k in a:  # sampling draws its own noise and takes no gradient: same weights
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    info = json.loads((tmp_path / "watched" / "fit.json").read_text())
    points = info["watch"]["points"]
    assert [p["step"] for p in points] == [3, 6]  # every checkpoint, the last one included once
    for p in points:
        assert 0 <= p["precision"] <= 1 and 0 <= p["recall"] <= 1 and p["density"] >= 0
    assert "step 3: samples vs 16 training images (shapes features): precision" in watched.stderr
    assert "samples vs 16 training images (shapes features) at step 6" in watched.stderr  # the closing verdict
    assert "Watched: samples vs 16 training images" in (tmp_path / "watched" / "README.md").read_text()
    assert json.loads((tmp_path / "plain" / "fit.json").read_text())["watch"] is None
    # the watch is not part of the recipe: the same hash with or without it
    assert info["recipe_sha256"] == json.loads((tmp_path / "plain" / "fit.json").read_text())["recipe_sha256"]


def test_a_stopped_fit_keeps_its_watch_history_when_resumed(tmp_path):
    m = _manifest(tmp_path, "stopped", ", every = 2", extra="max_minutes = 0.00001\n")
    res = synth("fit", "-q", "--threads", "1", m)
    assert res.returncode == 0 and "stopped at step 1" in res.stderr, res.stderr
    assert [p["step"] for p in json.loads((tmp_path / "stopped" / "fit.json").read_text())["watch"]["points"]] == [1]
    m.write_text(m.read_text().replace("max_minutes = 0.00001\n", ""))  # not part of the recipe
    res = synth("fit", "-q", m)
    assert res.returncode == 0 and "resumed from the checkpoint at step 1" in res.stderr, res.stderr
    points = json.loads((tmp_path / "stopped" / "fit.json").read_text())["watch"]["points"]
    assert [p["step"] for p in points] == [1, 2, 4, 6]


def test_an_unknown_watch_extractor_is_one_line_before_any_image_is_read(tmp_path):
    m = _manifest(tmp_path, "bad", "").with_name("bad.toml")
    m.write_text(m.read_text().replace('extractor = "shapes"', 'extractor = "nonesuch"'))
    res = synth("fit", m)
    assert res.returncode == 2
    assert "fit.watch.extractor.name" in res.stderr and "nonesuch" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "bad" / "checkpoints").exists()


def _history(scores):
    return [{"step": i, "precision": s / 2, "recall": s / 2, "density": 1.0, "coverage": 1.0} for i, s in enumerate(scores)]


def test_a_stall_is_told_from_a_slow_climb():
    from synth_diffusers.fit_config import FitWatchConfig
    from synth_diffusers.fit_watch import Watch

    w = Watch.__new__(Watch)
    w.cfg = FitWatchConfig(extractor="shapes", min_gain=0.02, patience=3)
    w.history = _history([1.0, 1.5, 1.51, 1.50, 1.515])  # three watches within 0.02 of 1.5
    assert w.stalled() == 3
    # said once, and as what it is: the features stopped telling checkpoints apart, not a verdict
    # that the samples cannot improve
    w.name, w.reference, w.said_stalled = "shapes", np.zeros((256, 8)), False
    said = w.line(w.history[-1])
    assert "no gain of 0.02 in precision + recall for 3 watches" in said and "progress/" in said
    assert "change little" not in said and "no gain" not in w.line(w.history[-1])
    w.history = _history([1.0, 1.5, 1.51, 1.52, 1.53])  # +0.01 a watch: adds up to a gain at 1.53
    assert w.stalled() == 0
    w.history = _history([1.0, 1.5, 1.51, 1.45])
    assert w.stalled() == 2


def test_a_watch_extractor_that_cannot_load_stops_the_fit_before_reading_images(tmp_path):
    m = _manifest(tmp_path, "noload", "")
    m.write_text(m.read_text().replace('extractor = "shapes"', 'extractor = { name = "dinov2", model = "./no-such-folder" }'))
    res = synth("fit", m, env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode != 0 and "extractor 'dinov2': cannot load" in res.stderr and "Traceback" not in res.stderr
    assert "reading images" not in res.stderr and not (tmp_path / "noload" / "checkpoints").exists()
