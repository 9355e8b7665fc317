"""`synth optimise`: successive halving over manifest values, scored by a downstream task on real
labelled images; resumable; bad spaces and validation sets refused in one line."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import synth, write_manifest
from synth_optimise.search import SearchConfig, cost, fit_budget, halving, schedule

CLASSES = '["background", "circle", "square", "triangle"]'


def test_the_schedule_halves_to_one_trial_within_the_budget():
    assert schedule(9, 900, 3, 32) == [(9, 100), (3, 300), (1, 900)]
    assert cost(schedule(9, 900, 3, 32), 900) == 3.0
    # Too few samples for three rungs above min_samples: two rungs, the last keeps three.
    assert schedule(27, 100, 3, 32) == [(27, 33), (9, 100)]
    assert schedule(1, 100, 3, 32) == [(1, 100)]
    n, plan = fit_budget(27, 900, SearchConfig(budget=2.0, eta=3, min_samples=32))
    assert cost(plan, 900) <= 2.0 and n < 27 and fit_budget(n + 1, 900, SearchConfig(budget=2.0, eta=3, min_samples=32))[0] == n


def test_successive_halving_keeps_the_better_arm():
    # Eight settings of known quality; a trial's score is the quality plus noise that shrinks
    # with its samples, as a small trial's does. Without noise the best always wins; with it,
    # nearly always, and the search costs a fraction of scoring every setting on all samples.
    quality = [0.50, 0.52, 0.61, 0.47, 0.55, 0.58, 0.49, 0.53]
    plan = schedule(len(quality), 640, 2, 40)
    calls = []

    def scorer(noise, rng):
        def score_of(arm, samples, rung):
            calls.append(samples)
            return quality[arm] + rng.normal(0, noise / np.sqrt(samples / 10))
        return score_of

    trials, best = halving(list(range(8)), plan, scorer(0.0, np.random.default_rng(0)))
    assert best == 2
    assert [t["rung"] for t in trials] == [0] * 8 + [1] * 4 + [2] * 2 + [3]
    assert sum(calls) == 4 * 640 < 8 * 640  # half of scoring all eight on every sample
    assert [t["arm"] for t in trials if t["rung"] == 1] == [2, 5, 4, 7]  # the best half, best first
    wins = sum(halving(list(range(8)), plan, scorer(0.05, np.random.default_rng(s)))[1] == 2 for s in range(50))
    assert wins >= 45, wins


def _validation(folder, n: int) -> None:
    """n real scenes of the val split with their masks beside them (NAME.seg.png)."""
    from synth_shapes.world import render_many

    folder.mkdir()
    for i, (im, m) in enumerate(zip(*render_many(0, range(n), 32, 0.3, "val"))):
        Image.fromarray(im).save(folder / f"v{i:03d}.png")
        Image.fromarray(m).save(folder / f"v{i:03d}.seg.png")


def _world(tmp_path, train: int = 48, val: int = 24):
    """Real scenes with right, blank and shuffled masks (so the answer is known), and a
    validation folder with masks beside the images."""
    from synth_shapes.world import render_many

    images, masks = render_many(0, range(train), 32, 0.3, "train")
    for name in ("images", "right", "blank", "shuffled"):
        (tmp_path / name).mkdir()
    for i, (im, m) in enumerate(zip(images, masks)):
        Image.fromarray(im).save(tmp_path / "images" / f"s{i:03d}.png")
        Image.fromarray(m).save(tmp_path / "right" / f"s{i:03d}.png")
        Image.fromarray(np.zeros_like(m)).save(tmp_path / "blank" / f"s{i:03d}.png")
        Image.fromarray(masks[(i + 7) % len(masks)]).save(tmp_path / "shuffled" / f"s{i:03d}.png")
    _validation(tmp_path / "val", val)
    manifest = write_manifest(tmp_path, f"""
[dataset]
name = "opt"
output = "out"
num_samples = {train}
shard_size = 24
classes = {CLASSES}
[[stage]]
name = "folder"
path = "images"
masks = "blank"
""")
    space = tmp_path / "space.toml"
    space.write_text("""
[task]
name = "segmentation"
steps = 100
width = 8
[search]
eta = 2
min_samples = 24
[values]
"stage.folder.masks" = ["blank", "right", "shuffled"]
""")
    return manifest, space


def _assert_model_scores(folder, val, score):
    import torch

    from synth.segmetrics import class_ious, mean_iou
    from synth_optimise.task_model import TaskModelClassifier, TaskModelConfig

    clf = TaskModelClassifier(TaskModelConfig(path=str(folder), device="cpu"), type("C", (), {"resolve_path": staticmethod(lambda p: p)})())
    clf.setup()
    assert clf.per_pixel and clf.classes == json.loads(CLASSES) and clf.image_size == (32, 32)
    names = sorted(p for p in val.glob("*.png") if not p.name.endswith(".seg.png"))
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in names])).permute(0, 3, 1, 2).float() / 255
    y = np.stack([np.asarray(Image.open(p.with_suffix(".seg.png"))) for p in names])
    with torch.no_grad():
        pred = clf.differentiable(x).argmax(1).numpy()
    assert mean_iou(class_ious(pred, y, len(CLASSES))) == pytest.approx(score, abs=0.01)


@pytest.mark.slow
def test_the_search_finds_the_setting_that_teaches_and_writes_its_manifest(tmp_path):
    manifest, space = _world(tmp_path)
    res = synth("optimise", str(manifest), "--space", str(space), "--validation", str(tmp_path / "val"), "-q")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out-optimise"
    result = json.loads((out / "optimise.json").read_text())
    assert result["best"]["label"] == "masks=right", result["trials"]
    # The manifest as written equals one of the grid's settings: tried once, named by its value.
    assert result["tried"] == 3 and result["plan"] == [[3, 24], [2, 48]]
    assert {t["label"] for t in result["trials"]} == {"masks=blank", "masks=right", "masks=shuffled"}
    assert 'masks = "right"' in (out / "best.toml").read_text()
    assert "masks=right (best)" in (out / "optimise.md").read_text()
    assert Image.open(out / "optimise.png").size == (720, 420)
    # Every trial is a normal run of its own with its score beside it.
    trial = out / "trials" / "masks=right" / "n48"
    assert json.loads((trial / "data" / "dataset.json").read_text())["num_samples"] == 48
    assert json.loads((trial / "trial.json").read_text())["score"] == result["best"]["score"]
    assert "best: masks=right" in res.stdout and "best-model/" in res.stdout
    # The best trial's downstream model, as the task_model classifier (feedback's) reads it:
    # its per-pixel decisions on the validation scenes give the trial's score again.
    assert result["best_model"] == str(out / "best-model")
    _assert_model_scores(out / "best-model", tmp_path / "val", result["best"]["score"])
    # A search finished before models were saved: the best one is trained again, the same bytes.
    weights = (out / "best-model" / "task-model.safetensors").read_bytes()
    shutil.rmtree(trial / "model")
    res = synth("optimise", str(manifest), "--space", str(space), "--validation", str(tmp_path / "val"), "-q")
    assert res.returncode == 0 and (out / "best-model" / "task-model.safetensors").read_bytes() == weights
    # The run's page shows the search it belongs to (the optimise plugin's report section).
    shown = out / "trials" / "masks=blank" / "n24" / "data"
    assert synth("report", str(shown)).returncode == 0
    page = (shown / "report.html").read_text()
    assert "<section id=section-optimise>" in page and "This output is the trial <b>masks=blank</b> on 24 samples" in page
    assert page.count("<tr class=best>") == 1 and "<tr class=best><td>2</td><td>masks=right</td><td>48</td>" in page
    assert 'id=optimise-plot alt="score against cost" src="data:image/png;base64,' in page
    assert "Best: masks=right" in (shown / "report.md").read_text()


@pytest.mark.slow
def test_a_killed_search_resumes_without_redoing_finished_trials(tmp_path, monkeypatch):
    from synth_optimise import search
    from synth_optimise.tasks import SegmentationTask

    manifest, space = _world(tmp_path)
    trained = []
    real_train = SegmentationTask.train

    def train(self, images, targets, seed):
        if len(trained) == 2:
            raise KeyboardInterrupt  # killed during the third trial
        trained.append(len(images))
        return real_train(self, images, targets, seed)

    monkeypatch.setattr(SegmentationTask, "train", train)
    with pytest.raises(KeyboardInterrupt):
        search.optimise(manifest, space, str(tmp_path / "val"), quiet=True)
    done = sorted((tmp_path / "out-optimise" / "trials").glob("*/*/trial.json"))
    assert len(done) == 2
    stamps = [p.stat().st_mtime_ns for p in done]
    trained.clear()
    monkeypatch.setattr(SegmentationTask, "train", lambda self, *a: (trained.append(len(a[0])), real_train(self, *a))[1])
    result = search.optimise(manifest, space, str(tmp_path / "val"), quiet=True)
    assert len(trained) == 3  # five trials in all: two done before the kill, three now
    assert [p.stat().st_mtime_ns for p in done] == stamps
    assert sum(t["resumed"] for t in result["trials"]) == 2
    assert result["best"]["label"] == "masks=right"


def test_repeats_score_each_trial_by_the_mean_of_that_many_trainings(tmp_path, monkeypatch):
    """[search] repeats = 3: every trial trains the task three times (seeds seed, seed + 1,
    seed + 2) and scores their mean; a finished search resumes without training again, and the
    same search with one training per trial is a different search (its trials run anew)."""
    from synth_optimise import search
    from synth_optimise.tasks import SegmentationTask

    manifest, space = _world(tmp_path)
    space.write_text(space.read_text().replace("[search]", "[search]\nrepeats = 3\nseed = 5"))
    seeds = []

    def train(self, images, targets, seed):
        seeds.append(seed)
        return seed, float(np.mean(targets > 0))  # a stand-in model: its seed and how much its labels show

    def evaluate(self, model, images, targets):
        return {"miou": round(0.5 + 0.01 * model[0] + 0.1 * model[1], 6)}

    def save(self, model, folder, size):
        raise NotImplementedError

    for name, fn in (("train", train), ("evaluate", evaluate), ("save", save)):
        monkeypatch.setattr(SegmentationTask, name, fn)
    result = search.optimise(manifest, space, str(tmp_path / "val"), quiet=True)
    # (the last: the best trial's model, trained again for best-model/ since this task saves none)
    assert len(result["trials"]) == 5 and seeds == [5, 6, 7] * 5 + [5]
    for trial in result["trials"]:
        scores = trial["scores"]
        assert [round(b - a, 6) for a, b in zip(scores, scores[1:])] == [0.01, 0.01]  # seeds 5, 6, 7 on the same samples
        assert trial["score"] == pytest.approx(np.mean(scores)) and trial["figures"]["miou"] == scores[0]
    seeds.clear()
    assert all(t["resumed"] for t in search.optimise(manifest, space, str(tmp_path / "val"), quiet=True)["trials"]) and seeds == [5]
    seeds.clear()
    space.write_text(space.read_text().replace("repeats = 3", "repeats = 1"))
    once = search.optimise(manifest, space, str(tmp_path / "val"), quiet=True)
    assert seeds == [5] * 6 and not any(t["resumed"] for t in once["trials"]) and "scores" not in once["trials"][0]


def _bad(tmp_path, space_values: str | None = None, validation: str = "val"):
    manifest, space = _world(tmp_path, train=8, val=4)
    if space_values is not None:
        text = space.read_text().split("[values]")[0] + "[values]\n" + space_values + "\n"
        space.write_text(text)
    return synth("optimise", str(manifest), "--space", str(space), "--validation", str(tmp_path / validation), "-q")


@pytest.mark.parametrize("values, validation, expected", [
    ('"stage.folder.colour" = [1, 2]', "val", "space.toml: colour=1: stage[0].colour: unknown field"),
    ('"stage.folder.size" = [-3]', "val", "space.toml: size=-3: stage[0].size:"),
    ('"stage.fold.size" = [16]', "val", "space.toml: stage.fold.size: no stage named 'fold'"),
    ('"dataset.num_samples" = [16]', "val", "values.dataset.num_samples: the search sets this itself"),
    (None, "images", "has images without masks"),
    (None, "nowhere", "--validation: no such folder"),
    (None, "other", "--validation: s00000000: a.png: mask has class id 7, beyond the 4 classes of [dataset].classes"),
])
def test_bad_spaces_and_validation_sets_fail_in_one_line_before_any_run(tmp_path, values, validation, expected):
    if validation == "other":
        (tmp_path / "other").mkdir()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "other" / "a.png")
        Image.fromarray(np.full((32, 32), 7, np.uint8)).save(tmp_path / "other" / "a.seg.png")
    res = _bad(tmp_path, values, validation)
    assert res.returncode == 2, res.stderr
    assert expected in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "out-optimise").exists()


@pytest.mark.slow
def test_influence_selection_prefers_the_samples_built_to_help(tmp_path):
    # 64 real scenes, every other one with another scene's mask: selection by influence on a
    # labelled validation set keeps mostly the right ones (chance: 16 of 32).
    from synth_shapes.world import render_many

    x, y = render_many(0, range(64), 32, 0.3, "train")
    for name in ("images", "mixed"):
        (tmp_path / name).mkdir()
    for i, im in enumerate(x):
        Image.fromarray(im).save(tmp_path / "images" / f"s{i:03d}.png")
        Image.fromarray(y[i] if i % 2 == 0 else y[(i + 7) % 64]).save(tmp_path / "mixed" / f"s{i:03d}.png")
    _validation(tmp_path / "val", 32)
    manifest = write_manifest(tmp_path, f"""
[dataset]
name = "infl"
output = "out"
num_samples = 64
shard_size = 32
classes = {CLASSES}
[[stage]]
name = "folder"
path = "images"
masks = "mixed"
[[stage]]
name = "influence"
validation = "val"
task = {{name = "segmentation", width = 8}}
[[stage]]
name = "select"
method = "influence"
fraction = 0.5
""")
    res = synth("run", str(manifest), "-q")
    assert res.returncode == 0, res.stderr
    from synth.reading import iter_samples, shard_paths

    kept = [json.loads(s["json"]) for p in shard_paths(tmp_path / "out") for s in iter_samples(p)]
    assert len(kept) == 32
    right = sum(r["index"] % 2 == 0 for r in kept)
    assert right >= 24, right
    # Every kept sample scores at least as high as every dropped one.
    drops = [d for p in sorted((tmp_path / "out").glob("*.stats.json")) for d in json.loads(p.read_text())["dropped"]]
    assert len(drops) == 32 and all(d["reason"] == "not among the 32 most influential" for d in drops)


def test_influence_selection_without_the_influence_stage_fails_validate(tmp_path):
    manifest = write_manifest(tmp_path, f"""
[dataset]
num_samples = 8
classes = {CLASSES}
[[stage]]
name = "shapes"
[[stage]]
name = "image_stats"
[[stage]]
name = "select"
method = "influence"
keep = 4
""")
    res = synth("validate", str(manifest))
    assert res.returncode == 2
    assert "stage[2]: method = \"influence\" keeps the highest scores.influence; put the influence stage (plugin optimise) before select" in res.stderr


def test_a_saved_classification_model_decides_as_the_trained_one(tmp_path):
    """The classification task's model through the task_model classifier: the same decisions;
    a segmentation model refuses per-image logits in one line."""
    import torch

    from synth.errors import UsageError
    from synth_optimise import SegmentationConfig, SegmentationTask
    from synth_optimise.models import classify
    from synth_optimise.task_model import TaskModelClassifier, TaskModelConfig
    from synth_optimise.tasks import ClassificationConfig, ClassificationTask
    from synth_shapes.world import render_many

    x, masks = render_many(0, range(32), 32, 0.3, "train")
    y = np.array([np.bincount(m.ravel(), minlength=4)[1:].argmax() for m in masks])
    context = type("C", (), {"resolve_path": staticmethod(lambda p: p)})()
    task = ClassificationTask(ClassificationConfig(steps=20), ["circle", "square", "triangle"])
    net = task.train(x, y, 0)
    task.save(net, tmp_path / "cls", (32, 32))
    clf = TaskModelClassifier(TaskModelConfig(path=str(tmp_path / "cls"), device="cpu"), context)
    clf.setup()
    assert not clf.per_pixel and clf.classes == ["circle", "square", "triangle"]
    assert (clf.logits(x).argmax(1) == classify(torch, net, x)).all()
    seg = SegmentationTask(SegmentationConfig(steps=2, width=4), ["background", "circle", "square", "triangle"])
    seg.save(seg.train(x, masks, 0), tmp_path / "seg", (32, 32))
    clf = TaskModelClassifier(TaskModelConfig(path=str(tmp_path / "seg"), device="cpu"), context)
    clf.setup()
    with pytest.raises(UsageError, match="a segmentation model gives per-pixel logits"):
        clf.logits(x)


def test_the_classifier_batches_turn_only_the_ways_asked_and_the_task_refuses_others():
    """augment: each image a quarter turn of itself, mirrored or not, its channels reordered; the
    same draws from the same generator; the classification task passes it and refuses others."""
    import torch
    from pydantic import ValidationError

    from synth_optimise.models import augmented
    from synth_optimise.tasks import ClassificationConfig

    xb = torch.rand(16, 3, 8, 8)
    turned = augmented(torch, xb, ("rotate",), torch.Generator().manual_seed(0))
    for im, out in zip(xb, turned):
        assert any(torch.equal(torch.rot90(im, k, (1, 2)), out) for k in range(4))
    assert not torch.equal(turned, xb)  # 16 draws of four turns: some image turned
    assert torch.equal(turned, augmented(torch, xb, ("rotate",), torch.Generator().manual_seed(0)))
    mirrored = augmented(torch, xb, ("flip",), torch.Generator().manual_seed(1))
    assert all(torch.equal(out, im) or torch.equal(out, im.flip(2)) for im, out in zip(xb, mirrored))
    swapped = augmented(torch, xb, ("channels",), torch.Generator().manual_seed(2))
    for im, out in zip(xb, swapped):
        assert sorted(out.sum((1, 2)).tolist()) == pytest.approx(sorted(im.sum((1, 2)).tolist()))
    assert not torch.equal(swapped, xb)
    assert ClassificationConfig(augment=["rotate", "channels"]).augment == ["rotate", "channels"]
    with pytest.raises(ValidationError):
        ClassificationConfig(augment=["shear"])
