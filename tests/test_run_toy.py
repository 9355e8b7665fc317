"""End to end on the toy generator: run, read back with webdataset and Hugging Face, resume."""

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import synth, toy_manifest
from synth.reading import iter_samples
from synth.seeding import sample_rng


def _tars(out):
    return sorted(out.glob("toy-*.tar"))


def test_run_writes_shards_and_reads_back_with_webdataset(tmp_path):
    import webdataset as wds

    manifest = toy_manifest(tmp_path, n=20, shard=8, batch=3)
    res = synth("run", manifest)
    assert res.returncode == 0, res.stderr
    assert "wrote 20 samples in 3 shards" in res.stderr
    out = tmp_path / "out"
    tars = _tars(out)
    assert [t.name for t in tars] == ["toy-000000.tar", "toy-000001.tar", "toy-000002.tar"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["num_samples"] == 20 and [s["count"] for s in info["shards"]] == [8, 8, 4]
    for shard, tar in zip(info["shards"], tars):
        assert shard["sha256"] == hashlib.sha256(tar.read_bytes()).hexdigest()
    assert info["classes"] == ["circle", "square", "triangle"]
    assert info["fields"] == ["cls", "json", "latent.npy", "png"]
    assert "toy" in info["plugins"] and info["manifest"]["sha256"]

    ds = wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8")
    samples = list(ds)
    assert [s["__key__"] for s in samples] == [f"s{i:08d}" for i in range(20)]
    for i, s in enumerate(samples):
        assert set(s) >= {"png", "json", "latent.npy", "cls"}
        assert s["png"].shape == (32, 32, 3) and s["png"].dtype == np.uint8
        meta = s["json"]
        assert meta["index"] == i and meta["key"] == s["__key__"] and meta["seed"] == 0
        assert meta["class"] == i % 3 == s["cls"] and meta["class_name"] == ["circle", "square", "triangle"][i % 3]
        assert meta["generator"]["name"] == "toy" and meta["plugins"]["toy"] == "0.1.0"
        assert meta["manifest_hash"] == info["manifest"]["sha256"]
        assert meta["lineage"] == [{"op": "generate", "generator": "toy"}]
        # The stored latent is exactly the one derived from (seed, index, "latent").
        expected = sample_rng(0, i, "latent").standard_normal(24).astype(np.float32).astype(np.float16)
        np.testing.assert_array_equal(s["latent.npy"], expected)


def test_hugging_face_webdataset_loader_reads_the_shards(tmp_path):
    from datasets import load_dataset

    manifest = toy_manifest(tmp_path, n=12, shard=6, batch=4)
    assert synth("run", manifest).returncode == 0
    files = [str(t) for t in _tars(tmp_path / "out")]
    ds = load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 12
    assert set(ds.column_names) >= {"__key__", "png", "json", "latent.npy", "cls"}
    row = ds[5]
    assert row["__key__"] == "s00000005"
    assert row["png"].size == (32, 32)
    assert row["json"]["index"] == 5 and row["cls"] == 5 % 3
    assert np.asarray(row["latent.npy"]).shape == (24,)


def test_rerun_does_nothing_and_says_so(tmp_path):
    manifest = toy_manifest(tmp_path)
    assert synth("run", manifest).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    res = synth("run", manifest)
    assert res.returncode == 0
    assert "nothing to do: all 3 shards" in res.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_changed_manifest_refuses_then_overwrite_starts_over(tmp_path):
    manifest = toy_manifest(tmp_path, n=20)
    assert synth("run", manifest).returncode == 0
    toy_manifest(tmp_path, n=10)  # same file, new content
    res = synth("run", manifest)
    assert res.returncode == 2
    assert "different manifest" in res.stderr and "--overwrite" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert len(_tars(tmp_path / "out")) == 3  # untouched
    res = synth("run", manifest, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert len(_tars(tmp_path / "out")) == 2
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["num_samples"] == 10


def test_same_manifest_gives_byte_identical_output_and_batch_size_does_not_change_samples(tmp_path):
    a = toy_manifest(tmp_path, n=10, batch=4, name="a.toml")
    assert synth("run", a, "--output", tmp_path / "a").returncode == 0
    assert synth("run", a, "--output", tmp_path / "b").returncode == 0
    for name in ("toy-000000.tar", "toy-000001.tar", "dataset.json", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Another batch size and shard size: every sample's image and latent are the same.
    c = toy_manifest(tmp_path, n=10, batch=3, shard=5, name="c.toml")
    assert synth("run", c, "--output", tmp_path / "c").returncode == 0

    def members(folder):
        return {
            s["__key__"]: (s["png"], s["latent.npy"])
            for t in sorted(folder.glob("*.tar"))
            for s in iter_samples(t)
        }

    assert members(tmp_path / "a") == members(tmp_path / "c")


def test_filter_drops_are_recorded_with_reasons(tmp_path):
    extra = """
[[stage]]
name = "generate"
[[stage]]
name = "image_stats"
[[stage]]
name = "threshold"
score = "contrast"
min = 0.08
"""
    manifest = toy_manifest(tmp_path, n=30, shard=10, extra=extra)
    res = synth("run", manifest)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    info = json.loads((out / "dataset.json").read_text())
    kept = [s for t in _tars(out) for s in iter_samples(t)]
    assert 0 < info["num_dropped"] < 30
    assert info["num_samples"] == len(kept) == 30 - info["num_dropped"]
    assert info["dropped_by_reason"] == {"threshold: contrast < min 0.08": info["num_dropped"]}
    for s in kept:
        assert json.loads(s["json"])["scores"]["contrast"] >= 0.08
    stats = json.loads((out / "toy-000000.stats.json").read_text())
    for d in stats["dropped"]:
        assert d["stage"] == "threshold" and d["detail"].startswith("contrast=")
        assert float(d["detail"].split("=")[1]) < 0.08
    assert "dropped" in res.stderr


@pytest.mark.parametrize("fmt,ext", [("jpg", "jpg"), ("webp", "webp")])
def test_image_format_is_configurable(tmp_path, fmt, ext):
    manifest = toy_manifest(tmp_path, n=4, shard=4)
    manifest.write_text(manifest.read_text().replace("classes =", f'image_format = "{fmt}"\nclasses ='))
    assert synth("run", manifest).returncode == 0
    (s, *_) = list(iter_samples(_tars(tmp_path / "out")[0]))
    assert ext in s and "png" not in s
    assert Image.open(io.BytesIO(s[ext])).format == {"jpg": "JPEG", "webp": "WEBP"}[fmt]
