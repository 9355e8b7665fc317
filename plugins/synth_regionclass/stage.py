"""`region_class`: after a labeller, each region it drew takes the class a classifier of whole
regions gives it (trained on the labelled examples' instances), with the labeller's own pixel
votes as a prior. The outline stays the labeller's; only which class each region is changes."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

from synth.annotations import load_examples
from synth.batch import Batch
from synth.errors import UsageError
from synth.paths import cache_dir, cached_or_shipped, replace_folder
from synth.protocols import Stage

from .config import RegionClassConfig
from .crops import instances
from .model import classify_regions, small_cnn, train_classifiers

FORMAT = "synth-region-class-1"
# the classifier's own settings: a change trains a new one
TRAINING = ("background", "input", "crop", "min_pixels", "ensemble", "steps")


class RegionClass(Stage):
    """Each region an earlier labeller drew takes the class a classifier of whole regions
    (trained on the labelled instances) gives it, the labeller's pixel votes as a prior."""

    name = "region_class"
    kind = "transform"
    Config = RegionClassConfig
    scores = frozenset()

    @classmethod
    def check_plan(cls, config: RegionClassConfig, plan) -> list[str]:
        if config.background not in plan.classes:
            return [f"background: {config.background!r} is not one of [dataset].classes {plan.classes}"]
        if not any(getattr(step.cls, "seg", None) == "makes" for step in plan.earlier()):
            return ["region_class classes the regions an earlier labeller drew; put a labeller (pixelhead, sam, attention) before it"]
        return []

    def setup(self) -> None:
        import torch

        cfg, ctx = self.config, self.context
        where = "stage 'region_class'"
        examples = load_examples(cfg.annotations, ctx, where)
        self.background = ctx.classes.index(cfg.background)
        key = self._key(examples)
        folder = (ctx.resolve_path(cfg.cache_dir) if cfg.cache_dir else cache_dir()) / "region_classifiers" / key[:32]
        for candidate in cached_or_shipped(folder, ctx.generator, "region_classifiers"):
            if self._cached(candidate, key):
                self._load(candidate)
                return
        crops, labels = instances(examples.images, examples.masks, self.background, cfg.crop, cfg.input == "image", cfg.min_pixels)
        counts = np.bincount(labels, minlength=len(ctx.classes))
        if not len(labels):
            raise UsageError(f"{where}.annotations: the {len(examples.keys)} labelled images hold no instance of {cfg.min_pixels}+ pixels outside {cfg.background!r}")
        if not ctx.quiet:
            seen = ", ".join(f"{c} {n}" for c, n in zip(ctx.classes, counts) if n)
            print(f"synth: region_class: training on {len(labels)} labelled instances ({seen}); cached for later runs", file=sys.stderr)
        self.known = counts > 0
        self.nets = train_classifiers(torch, crops, labels, len(ctx.classes), cfg.ensemble, cfg.steps, ctx.seed)
        self.info = {"format": FORMAT, "key": key, "classes": ctx.classes, "instances": counts.tolist(), "channels": int(crops.shape[1])}
        self._save(folder)

    @staticmethod
    def _cached(folder, key: str) -> bool:
        """A finished classifier under this key (an unreadable one is trained again)."""
        try:
            info = json.loads((folder / "classifier.json").read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return info.get("key") == key and (folder / "classifier.safetensors").is_file()

    def _key(self, examples) -> str:
        cfg = self.config
        blob = {"format": FORMAT, "annotations": examples.digest(), "classes": self.context.classes, "seed": self.context.seed,
                "config": {k: getattr(cfg, k) for k in TRAINING}}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()

    def _save(self, folder) -> None:
        from safetensors.torch import save_file

        def fill(tmp) -> None:
            save_file({k: v.contiguous() for k, v in self.nets.state_dict().items()}, str(tmp / "classifier.safetensors"))
            (tmp / "classifier.json").write_text(json.dumps(self.info, indent=1, sort_keys=True))

        replace_folder(folder, fill)

    def _load(self, folder) -> None:
        from safetensors.torch import load_file

        self.info = json.loads((folder / "classifier.json").read_text())
        self._build(load_file(str(folder / "classifier.safetensors")))

    def _build(self, state) -> None:
        import torch

        n = len(self.context.classes)
        self.nets = torch.nn.ModuleList(small_cnn(torch, self.info["channels"], n) for _ in range(self.config.ensemble))
        self.nets.load_state_dict(state)
        self.nets.eval()
        self.known = np.array(self.info["instances"]) > 0

    def share(self) -> dict:
        """The trained classifier itself: every process classes with exactly these weights."""
        return {"info": self.info, "state": {k: v.numpy() for k, v in self.nets.state_dict().items()}}

    def adopt(self, shared: dict) -> None:
        import torch

        self.background = self.context.classes.index(self.config.background)
        self.info = shared["info"]
        self._build({k: torch.from_numpy(v) for k, v in shared["state"].items()})

    def report(self) -> dict:
        return {"instances": dict(zip(self.context.classes, self.info["instances"])), "input": self.config.input, "prior": self.config.prior}

    def process(self, batch: Batch) -> Batch:
        import torch

        if batch.seg is None:
            raise UsageError("stage 'region_class': these samples carry no labels; put a labeller (pixelhead, sam, attention) before it")
        cfg = self.config
        batch.seg = np.stack([
            classify_regions(torch, self.nets, self.known, image, seg, self.background, cfg.tolerance, cfg.crop, cfg.input == "image", cfg.prior, cfg.min_pixels)
            for image, seg in zip(batch.images, batch.seg)
        ])
        for rec in batch.records:
            rec.setdefault("labels", {})["region_class"] = {"input": cfg.input, "prior": cfg.prior, "classifier": self.info["key"][:16]}
        return batch
