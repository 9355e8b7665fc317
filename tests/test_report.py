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


SEGMENTATION = """
[dataset]
name = "seg"
num_samples = 40
shard_size = 20
[run]
batch_size = 20
[[stage]]
name = "shapes"
[[stage]]
name = "image_stats"
[[stage]]
name = "threshold"
score = "contrast"
min = 0.05
[[stage]]
name = "select"
keep = 24
"""

VIEWS = """
[dataset]
name = "views"
num_samples = 8
shard_size = 8
classes = ["background", "circle", "square", "triangle"]
[run]
batch_size = 8
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
name = "views"
k = 2
sigma = "auto"
auto = { labeller = { name = "shapes_classify" }, samples = 8, views = 2, radii = [0.05, 0.3, 0.6] }
"""


def _run_and_report(folder, body):
    m = write_manifest(folder, body)
    res = synth("run", "-q", m)
    assert res.returncode == 0, res.stderr
    res = synth("report", folder / "out")
    assert res.returncode == 0, res.stderr
    return folder / "out"


@pytest.fixture(scope="module")
def seg_report(tmp_path_factory):
    return _run_and_report(tmp_path_factory.mktemp("segreport"), SEGMENTATION)


@pytest.fixture(scope="module")
def views_report(tmp_path_factory):
    return _run_and_report(tmp_path_factory.mktemp("viewsreport"), VIEWS)


def test_a_segmentation_report_shows_pixel_shares_and_dropped_samples_with_thumbnails(seg_report):
    html = (seg_report / "report.html").read_text()
    assert "no class labels" not in html and "id=pixel-share-table" in html
    for name in ("background", "circle", "square", "triangle"):
        assert f"<td>{name}</td>" in html  # one share per class
    assert html.count("class=drop-group") == 2  # threshold and select, each one row however many it dropped
    assert 'class="thumb"' in html
    md = (seg_report / "report.md").read_text()
    assert "| class | share of labelled pixels |" in md and "select: " in md


def _browser_check(report, tmp_path, checks, shot_name="report.png"):
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
        broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")
        assert broken == []  # every image loaded
        checks(page)
        shot = Path(os.environ.get("SYNTH_REPORT_SCREENSHOT_DIR", tmp_path)) / shot_name
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert shot.stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_segmentation_and_views_reports_render_in_a_real_browser(seg_report, views_report, tmp_path):
    def seg(page):
        assert page.locator("#legend .swatch").count() == 4 and "triangle" in page.inner_text("#legend")
        assert page.locator("#pixel-shares").is_visible()
        assert page.locator("#report-score-contrast").is_visible()
        assert page.locator("tr.drop-group").count() == 2 and page.locator("img.thumb").count() >= 2
        assert int(page.inner_text("#num-dropped")) == 16

    def views(page):
        assert page.locator("#sigma-curve").is_visible()
        assert "view radius per class" in page.inner_text("#calibration")
        assert page.locator("#generator th", has_text="scheduler").count() == 1  # the generator as a table

    _browser_check(seg_report, tmp_path, seg, "report.png")
    _browser_check(views_report, tmp_path, views, "report-views.png")


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
