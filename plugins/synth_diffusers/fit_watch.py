"""Watching a fit by its samples, not only by its loss ([fit].watch).

A diffusion loss flattens long before the samples stop improving: in the second stage of the
shipped shapes-32 the loss fell 5% over 17,000 steps and "plateaued" by step 1,000, while the
oracle's shape fidelity of the samples rose from 0.79 to 0.86. So a loss plateau alone tells a
user to stop too early. With a watch, every ``every`` steps the fit draws ``samples`` images from
its EMA weights (DDIM, the same seeds each time) and compares them with as many of its training
images (a fixed subset) through a feature extractor (the extractor plugin kind):
precision, recall, density and coverage (synth.fidelity.prdc, k = 3). Once precision + recall has
not risen by ``min_gain`` for ``patience`` watches in a row (see Watch.stalled), the log says so,
and no more: features that no longer tell two checkpoints apart do not prove the samples cannot
improve. shapes-32-gpu's second stage logged no gain after step 1,128 of 4,512 (precision and
recall near 0.93 in the shapes features), while the oracle's shape fidelity of its sample grids
rose from 0.97 to 1.01 (bench/progress_fidelity.py) and its 1,000-sample fidelity ended at 0.97 against stage 1's 0.77.
The history rides in the checkpoints, so a resumed fit keeps it.
Drawing samples uses its own seeded generators and no gradient: the weights are the same with
or without a watch.
"""

from __future__ import annotations

import time

import numpy as np

from synth import extractors
from synth.errors import UsageError
from synth.fidelity import prdc
from synth.protocols import RunContext
from synth.seeding import sample_rng

from .fit_config import FitWatchConfig

CHUNK = 256  # images per extractor call


def _score(point: dict) -> float:
    return point["precision"] + point["recall"]


def _best(points: list[dict]) -> dict:
    return max(points, key=_score)


def _scores_text(point: dict) -> str:
    return f"precision {point['precision']:.3f} recall {point['recall']:.3f} density {point['density']:.3f} coverage {point['coverage']:.3f}"


class Watch:
    def __init__(self, m, cfg: FitWatchConfig, default_every: int):
        """Checks the extractor table and sets the extractor up: built before the training images
        are read, so an unknown extractor or a model it cannot load stops the fit at once."""
        problems: list[str] = []
        extractors.validate(m.registry, cfg.extractor, "fit.watch.extractor", problems)
        if problems:
            raise UsageError(problems[0])
        self.cfg = cfg
        self.seed = m.dataset.seed
        self.every = cfg.every or default_every
        context = RunContext(seed=m.dataset.seed, manifest_dir=m.folder, classes=list(m.dataset.classes), registry=m.registry, quiet=True)
        self.extractor = extractors.get(context, cfg.extractor)
        self.name = extractors.as_table(cfg.extractor)["name"]
        self.reference = None
        self.history: list[dict] = []
        self.said_stalled = False

    def set_reference(self, images: np.ndarray) -> None:
        """Features of a fixed subset of the training images, drawn from (seed, "fit-watch-reference")."""
        rng = sample_rng(self.seed, 0, "fit-watch-reference")
        rows = np.sort(rng.choice(len(images), size=min(self.cfg.samples, len(images)), replace=False))
        self.reference = self.embed(images[rows])

    def embed(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(self.extractor.embed(images[i : i + CHUNK]), np.float32) for i in range(0, len(images), CHUNK)])

    def measured(self, step: int) -> bool:
        return bool(self.history) and self.history[-1]["step"] == step

    def due(self, step: int) -> bool:
        return step % self.every == 0 and not self.measured(step)

    def measure(self, step: int, sample) -> dict:
        """One watch: ``sample(n, steps)`` draws the images (the trainer's EMA weights)."""
        t0 = time.perf_counter()
        feats = self.embed(sample(self.cfg.samples, self.cfg.steps))
        scores = {k: round(v, 4) for k, v in prdc(self.reference, feats, k=3).items()}
        point = {"step": step, **scores, "seconds": round(time.perf_counter() - t0, 1)}
        self.history.append(point)
        return point

    def stalled(self) -> int:
        """Watches in a row, up to the last, that did not beat by min_gain the level of the last
        watch that did (so a slow climb still counts once it adds up to min_gain)."""
        level, since = -np.inf, 0
        for p in self.history:
            score = _score(p)
            if score > level + self.cfg.min_gain:
                level, since = score, 0
            else:
                since += 1
        return since

    def line(self, point: dict) -> str:
        best = _best(self.history)
        text = (
            f"step {point['step']}: samples vs {len(self.reference)} training images ({self.name} features): {_scores_text(point)}"
            f" (best precision + recall {_score(best):.3f} at step {best['step']})"
        )
        if self.stalled() >= self.cfg.patience and not self.said_stalled:
            self.said_stalled = True
            text += (
                f"; no gain of {self.cfg.min_gain} in precision + recall for {self.stalled()} watches: {self.name} features no longer"
                " tell these checkpoints apart. Finer detail may still be improving: compare the grids in progress/ before stopping"
            )
        return text

    def summary(self) -> dict:
        return {
            "extractor": self.cfg.extractor,
            "samples": self.cfg.samples,
            "steps": self.cfg.steps,
            "every": self.every,
            "stalled_watches": self.stalled(),
            "stopped_improving": self.stalled() >= self.cfg.patience,
            "points": self.history,
        }


def verdict(summary: dict | None) -> str:
    """One line on the watched samples for the end of the log and the model card ('' unwatched)."""
    if not summary or not summary.get("points"):
        return ""
    last = summary["points"][-1]
    best = _best(summary["points"])
    name = extractors.as_table(summary["extractor"])["name"]
    state = (
        f"no gain for {summary['stalled_watches']} watches (finer detail may still improve: see progress/)"
        if summary["stopped_improving"]
        else "still improving or too few watches to tell"
    )
    return (
        f"samples vs {summary['samples']} training images ({name} features) at step {last['step']}: {_scores_text(last)}; "
        f"best precision + recall {_score(best):.3f} at step {best['step']}; {state}"
    )
