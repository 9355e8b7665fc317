"""Output anywhere fsspec reaches: the same shards and dataset.json in a local folder, a file://
URL and fsspec's memory filesystem; resume reads the remote listing."""

import hashlib
import json

import fsspec
import numpy as np

from conftest import synth, toy_manifest
from synth.engine import run
from synth.manifest import load_manifest
from synth.storage import FsspecStore, safe_url


def _local_files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".tar", ".json") and not p.name.startswith(".")}


def test_memory_filesystem_gets_the_same_bytes_and_resumes(tmp_path):
    m = toy_manifest(tmp_path, n=20, shard=8, batch=4)
    assert synth("run", "-q", m).returncode == 0
    local = _local_files(tmp_path / "out")
    manifest = load_manifest(m)
    summary = run(manifest, output="memory://synth-test/ds")
    assert summary.samples_written == 20
    fs = fsspec.filesystem("memory")
    remote = {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.ls("/synth-test/ds", detail=False)}
    shards = sorted(n for n in remote if n.endswith(".tar"))
    assert shards == ["toy-000000.tar", "toy-000001.tar", "toy-000002.tar"]
    assert not [n for n in remote if ".tmp-" in n]  # every upload moved into place
    for name in shards + [s.replace(".tar", ".stats.json") for s in shards]:
        assert remote[name] == local[name], name
    info, ref = json.loads(remote["dataset.json"]), json.loads(local["dataset.json"])
    assert info["shards"] == ref["shards"] and info["num_samples"] == 20
    # resume: a shard lost remotely is the only one made again; the others are not rewritten
    fs.rm("/synth-test/ds/toy-000001.tar")
    fs.rm("/synth-test/ds/dataset.json")
    again = run(load_manifest(m), output="memory://synth-test/ds")
    assert again.shards_made == 1 and again.shards_skipped == 2
    assert fs.cat_file("/synth-test/ds/toy-000001.tar") == local["toy-000001.tar"]
    assert run(load_manifest(m), output="memory://synth-test/ds").nothing_to_do


def test_file_url_is_a_local_folder(tmp_path):
    m = toy_manifest(tmp_path, n=6, shard=4)
    res = synth("run", "-q", m, "--output", f"file://{tmp_path / 'viaurl'}")
    assert res.returncode == 0, res.stderr
    assert synth("run", "-q", m).returncode == 0
    a, b = _local_files(tmp_path / "viaurl"), _local_files(tmp_path / "out")
    assert {k: hashlib.sha256(v).hexdigest() for k, v in a.items() if k.endswith(".tar")} == {
        k: hashlib.sha256(v).hexdigest() for k, v in b.items() if k.endswith(".tar")
    }


def test_urls_are_shown_without_credentials():
    assert safe_url("s3://key:secret@bucket/path/ds?X-Amz-Signature=abc") == "s3://bucket/path/ds"
    store = FsspecStore("memory://bucket/x")
    assert str(store) == "memory://bucket/x"
    store.close()


def test_unknown_protocol_is_one_line(tmp_path):
    res = synth("run", toy_manifest(tmp_path), "--output", "nosuchproto://bucket/ds")
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "output nosuchproto://bucket/ds:" in line and "Traceback" not in res.stderr


def test_inspect_reads_what_was_written_to_a_url(tmp_path):
    m = toy_manifest(tmp_path, n=4, shard=4)
    run(load_manifest(m), output="memory://synth-test2/ds")
    fs = fsspec.filesystem("memory")
    with fs.open("/synth-test2/ds/toy-000000.tar", "rb") as fh:
        from synth.reading import iter_samples

        keys = [s["__key__"] for s in iter_samples(fh)]
    assert keys == [f"s{i:08d}" for i in range(4)]
    assert np.asarray(json.loads(fs.cat_file("/synth-test2/ds/dataset.json"))["num_samples"]) == 4
