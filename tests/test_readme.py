"""The README is a guide whose every snippet runs: the manifest it walks through validates, the
trainer snippet reads shards laid out as the quickstart's, the plugin snippet registers a stage
that works; its links and the docs' point at files that exist; docs/reference.md is what
`synth schema --markdown` prints."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import synth, write_manifest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_the_readme_is_a_guide():
    assert len(README.splitlines()) < 400
    assert "make demo" in README and "make test" in README


def test_the_walked_through_manifest_validates(tmp_path):
    body = next(b for b in _blocks("toml") if "[dataset]" in b and 'name = "pets"' in b)
    m = write_manifest(tmp_path, body)
    res = synth("validate", m)
    assert res.returncode == 0, res.stderr


def test_the_trainer_snippet_reads_the_quickstarts_layout(tmp_path):
    """A small run named and laid out as the quickstart's (four shards, images with seg.png),
    then the README's snippet, unchanged, in that folder."""
    m = write_manifest(tmp_path, """
[dataset]
name = "quickstart"
output = "out/quickstart"
num_samples = 16
shard_size = 4
[[stage]]
name = "shapes"
""")
    assert synth("run", "-q", m).returncode == 0
    snippet = next(b for b in _blocks("python") if "wds.WebDataset" in b)
    check = snippet + textwrap.dedent("""
        assert images.shape[1:] == (3, 32, 32) and labels.shape == (len(images), 32, 32) and labels.dtype == torch.int64
        assert int(labels.max()) <= 3 and len(records) == len(images) and "lineage" in records[0]
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def test_the_plugin_snippet_registers_a_working_stage():
    from synth.batch import Batch

    snippet = next(b for b in _blocks("python") if "class Darken" in b)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    registered = []
    scope["register_stages"](registered.append)
    (Darken,) = registered
    stage = Darken(Darken.Config(factor=0.5), None)
    batch = Batch(keys=["a"], images=np.full((1, 4, 4, 3), 200, np.uint8), records=[{}])
    assert stage.process(batch).images.max() == 100


def test_every_link_in_the_readme_and_the_docs_points_at_a_file():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()) + re.findall(r'src="([^"]+)"', page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert missing == []


def test_the_reference_is_what_synth_schema_prints():
    res = synth("schema", "--markdown")
    assert res.returncode == 0, res.stderr
    assert (ROOT / "docs" / "reference.md").read_text() == res.stdout, "docs/reference.md is stale: run synth schema --markdown > docs/reference.md"
