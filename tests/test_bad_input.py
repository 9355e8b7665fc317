"""Bad input: one clear line, the right exit code, no traceback, nothing half-written."""

import errno
import hashlib
import json

from click.testing import CliRunner

from conftest import synth, toy_manifest, write_manifest
from synth.cli import main


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_missing_manifest_file(tmp_path):
    res = synth("run", tmp_path / "missing.toml")
    assert res.returncode == 2
    assert _one_line(res.stderr) == f"synth: error: {tmp_path / 'missing.toml'}: no such manifest file"


def test_toml_syntax_error(tmp_path):
    m = write_manifest(tmp_path, "[dataset]\nnum_samples = 3\nname = oops\n")
    res = synth("run", m)
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert "manifest.toml: invalid TOML" in line and "line 3, column 8" in line


def test_wrong_field_type_in_run(tmp_path):
    m = toy_manifest(tmp_path)
    m.write_text(m.read_text().replace("batch_size = 4", 'batch_size = "four"'))
    res = synth("run", m)
    assert res.returncode == 2
    assert "run.batch_size: Input should be a valid integer" in _one_line(res.stderr)
    assert not (tmp_path / "out").exists()  # nothing created before validation passed


def test_unknown_plugin_in_manifest_lists_installed(tmp_path):
    m = toy_manifest(tmp_path, extra='[[stage]]\nname = "generate"\n[[stage]]\nname = "treshold"\nscore = "x"\nmin = 1\n')
    res = synth("run", m)
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert "stage[1].name: unknown stage 'treshold'; did you mean 'threshold'?" in line and "installed:" in line


def test_output_folder_not_writable(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    res = synth("run", toy_manifest(tmp_path), "--output", tmp_path / "afile" / "out")
    assert res.returncode == 2
    assert "is not writable" in _one_line(res.stderr)


def _shard_hashes(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_stage_raising_mid_run_keeps_finished_shards(tmp_path, example_plugin):
    extra = '[[stage]]\nname = "generate"\n[[stage]]\nname = "boom"\nat_index = 10\n'
    m = toy_manifest(tmp_path, n=20, shard=4, batch=3, extra=extra)
    res = synth("run", "-q", m, env=example_plugin)
    assert res.returncode == 1
    line = _one_line(res.stderr)
    assert line == "synth: error: stage[1] 'boom' (synth-example-plugin 0.3.1) failed on samples s00000008..s00000010: RuntimeError: kaboom at index 10"
    # Without -q the progress bar is closed first and the error is still the last, single line.
    loud = synth("run", m, env=example_plugin)
    assert loud.returncode == 1 and loud.stderr.strip().splitlines()[-1] == line and "Traceback" not in loud.stderr
    out = tmp_path / "out"
    assert sorted(_shard_hashes(out)) == ["toy-000000.tar", "toy-000001.tar"]
    assert not list(out.glob(".*tmp-*"))  # no half shard, under any name
    for name, sha in _shard_hashes(out).items():
        stats = json.loads((out / name.replace(".tar", ".stats.json")).read_text())
        assert stats["sha256"] == sha and stats["count"] == 4
    assert not (out / "dataset.json").exists()
    # A rerun skips the finished shards (not rewritten) and fails at the same sample again.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    res = synth("run", m, env=example_plugin)
    assert res.returncode == 1 and "kaboom" in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == mtimes


def test_debug_shows_the_traceback(tmp_path, example_plugin):
    extra = '[[stage]]\nname = "generate"\n[[stage]]\nname = "boom"\nat_index = 0\n'
    res = synth("--debug", "run", toy_manifest(tmp_path, extra=extra), env=example_plugin)
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "kaboom" in res.stderr


def test_disk_full_keeps_finished_shards_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import synth.writer as writer

    real_write = writer._HashingFile.write
    budget = {"bytes": 0}

    def write(self, data):
        # The first shard fits; the disk fills up inside the second.
        if "toy-000001" in self.fh.name:
            budget["bytes"] += len(data)
            if budget["bytes"] > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(writer._HashingFile, "write", write)
    m = toy_manifest(tmp_path, n=24, shard=8, batch=4)
    res = CliRunner().invoke(main, ["run", "-q", str(m)])
    assert res.exit_code == 1
    assert "disk full while writing" in res.output and "toy-000001.tar" in res.output
    out = tmp_path / "out"
    assert [p.name for p in out.glob("*.tar")] == ["toy-000000.tar"]
    assert not list(out.glob(".*tmp-*"))
    # Space freed: the rerun resumes and completes.
    monkeypatch.setattr(writer._HashingFile, "write", real_write)
    res = CliRunner().invoke(main, ["run", "-q", str(m)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "dataset.json").read_text())["num_samples"] == 24


def test_another_run_holding_the_folder_is_refused(tmp_path):
    import fcntl

    m = toy_manifest(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".synth.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        res = synth("run", m)
    assert res.returncode == 1 and "another synth run is writing to" in _one_line(res.stderr)


def test_a_readme_synth_did_not_write_is_never_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("# my notes\n")
    (out / "notes.txt").write_text("keep me\n")
    m = toy_manifest(tmp_path)
    res = synth("run", "-q", m)
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert f"output folder {out} holds a README.md that synth did not write" in line and "--overwrite" in line
    assert (out / "README.md").read_text() == "# my notes\n" and not list(out.glob("*.tar"))
    # --overwrite replaces it; the user's other files are never touched
    assert synth("run", "-q", "--overwrite", m).returncode == 0
    assert "Synthetic images made by" in (out / "README.md").read_text() and (out / "notes.txt").read_text() == "keep me\n"
    # synth's own card is its own: a rerun finds nothing to do; edited by the user, it is theirs
    assert "nothing to do" in synth("run", m).stderr
    (out / "README.md").write_text((out / "README.md").read_text() + "\nmy edit\n")
    res = synth("run", m)
    assert res.returncode == 2 and "holds a README.md that synth did not write (or that was edited since)" in res.stderr


def test_overwrite_after_renaming_the_dataset_removes_the_old_shards(tmp_path):
    m = toy_manifest(tmp_path, n=12, shard=4)
    assert synth("run", "-q", m).returncode == 0
    out = tmp_path / "out"
    assert len(list(out.glob("toy-*.tar"))) == 3
    m.write_text(m.read_text().replace('name = "toy"\noutput', 'name = "shapes2"\noutput'))
    assert synth("run", "-q", "--overwrite", m).returncode == 0
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shapes2-00000{i}.tar" for i in range(3)]
    assert not list(out.glob("toy-*"))  # no old shard, no old stats
    res = synth("inspect", "--json", out)
    assert json.loads(res.stdout)["num_samples"] == 12


def test_overwrite_after_a_renamed_run_was_killed_before_dataset_json(tmp_path):
    """The state file remembers every name used, so shards of a run that never finished go too."""
    from synth.output import OutputFolder
    from synth.storage import LocalStore

    m = toy_manifest(tmp_path, n=12, shard=4)
    assert synth("run", "-q", m).returncode == 0
    out = tmp_path / "out"
    (out / "dataset.json").unlink()  # as if the run had been killed before its end
    m.write_text(m.read_text().replace('name = "toy"\noutput', 'name = "other"\noutput'))
    assert synth("run", "-q", "--overwrite", m).returncode == 0
    assert not list(out.glob("toy-*")) and len(list(out.glob("other-*.tar"))) == 3
    assert OutputFolder(LocalStore(out), "other").read_state()["names"] == ["other"]
