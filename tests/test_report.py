"""`synth report`: the HTML page loads in a real headless browser (Debian's Chromium, driven by
playwright), shows what it promises, logs no errors; a screenshot is saved."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import synth, write_manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MANIFEST = """
[dataset]
name = "rep"
num_samples = 24
shard_size = 12
classes = ["background", "circle", "square", "triangle"]
[run]
batch_size = 12
[generator]
name = "diffusers"
model = "builtin:shapes-32"
scheduler = "ddim"
steps = 4
[[stage]]
name = "generate"
[[stage]]
name = "shapes_classify"
[[stage]]
name = "image_stats"
[[stage]]
name = "threshold"
score = "contrast"
min = 0.02
[[stage]]
name = "metrics"
reference = { source = { name = "shapes", split = "test" }, count = 100 }
kid_subset_size = 10
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    m = write_manifest(folder, MANIFEST)
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    res = synth("report", folder / "out")
    assert res.returncode == 0, res.stderr
    return folder / "out"


def test_report_files_and_markdown_twin(report):
    html = (report / "report.html").read_text()
    assert "<section id=metrics>" in html and "data:image/png;base64," in html and "http" not in html.split("<body>")[1]
    md = (report / "report.md").read_text()
    assert md.startswith("# rep") and "| stage | FID |" in md and "![samples](report-grid.png)" in md
    assert (report / "report-score-contrast.png").is_file() and (report / "report-classes.png").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_report_renders_in_a_real_browser(report, tmp_path):
    from playwright.sync_api import sync_playwright

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto((report / "report.html").as_uri())
        assert page.inner_text("#num-samples").strip().isdigit()
        grid = page.locator("#sample-grid")
        assert grid.is_visible() and page.evaluate("document.getElementById('sample-grid').naturalWidth") > 0
        assert page.locator("#class-histogram").is_visible()
        assert page.locator("#report-score-contrast").is_visible()
        for metric in ("fid", "kid", "precision", "recall", "density", "coverage"):
            assert page.locator(f".metric-{metric}").first.inner_text().strip() not in ("", "-")
        shot = Path(os.environ.get("SYNTH_REPORT_SCREENSHOT", tmp_path / "report.png"))
        page.screenshot(path=str(shot))
        browser.close()
    assert errors == []
    assert shot.stat().st_size > 10_000
