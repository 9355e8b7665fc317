"""Real images as a source: a folder (optionally with masks) or WebDataset shards.

Sample i is the i-th image in a fixed order (sorted paths / shard order), so a shard task can
read its range without the others. Unreadable images and bad masks are skipped with a reason
(counted in the run's summary), never a crash.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from synth.batch import Batch, Dropped
from synth.errors import UsageError
from synth.protocols import PlanContext, PluginConfig, SourceStage
from synth.records import sample_key

from .images import ResizeMode, SkipSample, open_image, prepare_image, prepare_mask

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SHARD_IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp")


def _sized(config) -> tuple[int, int] | None:
    """A reading source's images are size x size when it resizes them, else only reading tells."""
    return (config.size, config.size) if config.size is not None and config.resize != "none" else None


class ImageSourceConfig(PluginConfig):
    size: int | None = Field(None, ge=8, le=4096, description="Resize to size x size (None: keep; all must match)")
    resize: ResizeMode = Field("resize", description="resize (stretch), center_crop (then resize), none")


def _assemble(stage: str, indices: Sequence[int], load, with_seg: bool, name_of) -> Batch:
    """Load each index; rows that fail become drops with their reason, the detail naming the file
    (``name_of(i)``) so a user can find it."""
    keys, images, segs, records, dropped = [], [], [], [], []
    for i in indices:
        key = sample_key(i)
        try:
            image, seg, record = load(i)
        except SkipSample as e:
            dropped.append(Dropped(key, stage, str(e).split(":")[0].split(" (mask ")[0], f"{name_of(i)}: {e}"))
            continue
        keys.append(key)
        images.append(image)
        segs.append(seg)
        records.append(record)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise UsageError(f"{stage}: images of different sizes {sorted(shapes)[:3]}; set size = N to resize them")
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    return Batch(
        keys=keys,
        images=np.stack(images) if images else empty,
        records=records,
        seg=(np.stack(segs) if segs else np.zeros((0, 1, 1), np.int64)) if with_seg else None,
        dropped=dropped,
    )


class FolderConfig(ImageSourceConfig):
    added_later = frozenset({"tags_file", "untagged"})

    path: str = Field(description="Folder of images (relative to the manifest)")
    recursive: bool = True
    masks: str = Field("auto", description="'auto': NAME.seg.png beside NAME.ext; 'none'; or a folder of NAME.png masks")
    labels: str = Field("none", description="'subfolder': class = name of the image's parent folder, from [dataset].classes")
    tags_file: str | None = Field(
        None,
        description="Image-level tags, each image's record's 'tags' (what `synth fit` with [fit] tags conditions on): a CSV "
        "with columns file,tags (tags separated by ';') or a JSONL of {\"file\": ..., \"tags\": [...]}; files relative to path",
    )
    untagged: Literal["error", "unlabelled"] = Field(
        "error",
        description="An image the tags_file does not list: an error, or unlabelled (its record has no tags; `synth fit` trains "
        "it with the null token, so a few tagged images condition a model fitted on many untagged ones)",
    )


def list_folder(cfg: "FolderConfig", resolve) -> tuple[Path, list[Path], Path | None]:
    """(root, sorted image files, masks folder) of a folder source; UsageError naming the field."""
    root = resolve(cfg.path)
    if not root.is_dir():
        raise UsageError(f"path: no such folder {root}")
    pattern = "**/*" if cfg.recursive else "*"
    files = sorted(
        p for p in root.glob(pattern)
        if p.suffix.lower() in IMAGE_EXTS and not p.name.endswith(".seg.png") and p.is_file()
    )
    mask_dir = None if cfg.masks in ("auto", "none") else resolve(cfg.masks)
    if mask_dir is not None and not mask_dir.is_dir():
        raise UsageError(f"masks: no such folder {mask_dir}")
    if mask_dir is not None and mask_dir.resolve() == root.resolve():
        raise UsageError("masks: the masks folder must differ from the image folder")
    if mask_dir is not None:
        files = [p for p in files if mask_dir not in p.parents]
    if not files:
        raise UsageError(f"path: no images in {root}")
    return root, files, mask_dir


def read_tags(path: Path, root: Path, files: list[Path], classes: list[str], untagged: str = "error") -> dict[str, list[str]]:
    """{file relative to root: tags} from a CSV (file,tags; tags split on ';') or JSONL file; every
    image needs an entry unless ``untagged`` is "unlabelled" (then it has none and at least one
    image must have one), and with [dataset].classes every tag must be one of them."""
    import csv

    if not path.is_file():
        raise UsageError(f"tags_file: no such file {path}")
    entries: dict[str, list[str]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"tags_file: cannot read {path}: {e}") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                file, tags = row["file"], row["tags"]
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"tags_file: {path.name} line {n}: expected {{\"file\": ..., \"tags\": [...]}}") from None
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise UsageError(f"tags_file: {path.name} line {n}: tags must be a list of strings")
            entries[str(file)] = [t.strip() for t in tags if t.strip()]
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and not {"file", "tags"} <= set(rows[0]):
            raise UsageError(f"tags_file: {path.name} needs the columns file,tags (found {', '.join(rows[0])})")
        for row in rows:
            entries[row["file"]] = [t.strip() for t in (row["tags"] or "").split(";") if t.strip()]
    if classes:
        for file, tags in entries.items():
            unknown = [t for t in tags if t not in classes]
            if unknown:
                raise UsageError(f"tags_file: {path.name} gives {file} the tag {unknown[0]!r}, which is not one of [dataset].classes {classes}")
    listed = 0
    for image in files:
        rel = str(image.relative_to(root))
        if rel in entries:
            listed += 1
        elif untagged == "error":
            raise UsageError(f"tags_file: {path.name} has no tags for the image {rel} (untagged = \"unlabelled\" trains such images unconditioned)")
    if not listed:
        raise UsageError(f"tags_file: {path.name} lists none of the images in {root}")
    return entries


def _too_few(plan: PlanContext, available: int, what: str) -> list[str]:
    if plan.position == 0 and plan.num_samples > available:
        return [f"dataset.num_samples is {plan.num_samples}, but {what} {available}"]
    return []


class FolderSource(SourceStage):
    """Read images (and class-id masks) from a folder, in sorted order."""

    name = "folder"
    kind = "source"
    Config = FolderConfig
    scores = frozenset()

    @classmethod
    def planned_size(cls, config, plan):
        return _sized(config)

    @classmethod
    def check_plan(cls, config, plan: PlanContext) -> list[str]:
        try:
            root, files, _ = list_folder(config, plan.resolve_path)
            if config.tags_file is not None:
                read_tags(plan.resolve_path(config.tags_file), root, files, plan.classes, config.untagged)
        except UsageError as e:
            return [str(e)]
        return _too_few(plan, len(files), f"{root} holds only")

    def setup(self) -> None:
        cfg = self.config
        try:
            root, files, mask_dir = list_folder(cfg, self.context.resolve_path)
        except UsageError as e:
            raise UsageError(f"{self.name}.{e}") from None
        self.root, self.files, self.mask_dir = root, files, mask_dir
        self.tags = None
        if cfg.tags_file is not None:
            try:
                self.tags = read_tags(self.context.resolve_path(cfg.tags_file), root, files, self.context.classes, cfg.untagged)
            except UsageError as e:
                raise UsageError(f"{self.name}.{e}") from None
        self.with_seg = cfg.masks != "none" and (mask_dir is not None or any(self._mask_path(p).exists() for p in files))
        if cfg.labels not in ("none", "subfolder"):
            raise UsageError(f"{self.name}.labels: expected 'none' or 'subfolder', got {cfg.labels!r}")
        if cfg.labels == "subfolder":
            names = sorted({p.parent.name for p in files})
            unknown = [n for n in names if n not in self.context.classes]
            if unknown:
                raise UsageError(f"{self.name}.labels: subfolders {unknown[:5]} are not in [dataset].classes")

    def _mask_path(self, image: Path) -> Path:
        if self.mask_dir is not None:
            rel = image.relative_to(self.root)
            return (self.mask_dir / rel).with_suffix(".png")
        return image.with_name(image.stem + ".seg.png")

    def num_available(self) -> int:
        return len(self.files)

    def _rel(self, path: Path) -> str:
        for base in (self.root, self.mask_dir):
            if base is not None and base in path.parents:
                return str(path.relative_to(base))
        return path.name

    def _load(self, i: int):
        if i >= len(self.files):
            raise UsageError(f"{self.name}: dataset.num_samples asks for sample {i}, the folder has {len(self.files)} images")
        path = self.files[i]
        img = open_image(path)
        image = prepare_image(img, self.config.size, self.config.resize)
        seg = None
        if self.with_seg:
            mpath = self._mask_path(path)
            if not mpath.exists():
                raise SkipSample(f"missing mask: {mpath.name}")
            try:
                seg = prepare_mask(open_image(mpath), img.size, self.config.size, self.config.resize, len(self.context.classes) or None)
            except SkipSample as e:  # the detail names the mask file, the reason stays a group
                raise SkipSample(f"{e} (mask {self._rel(mpath)})") from None
        rel = str(path.relative_to(self.root))
        record = {"index": i, "source": {"kind": "folder", "file": rel}, "lineage": [{"op": "read", "source": "folder", "file": rel}]}
        if self.config.labels == "subfolder":
            record["class"] = self.context.classes.index(path.parent.name)
        if self.tags is not None and rel in self.tags:  # untagged = "unlabelled": no tags
            record["tags"] = self.tags[rel]
        return image, seg, record

    def produce(self, indices: Sequence[int]) -> Batch:
        return _assemble(self.name, indices, self._load, self.with_seg, lambda i: str(self.files[i].relative_to(self.root)))


class ShardsConfig(ImageSourceConfig):
    urls: list[str] | str = Field(description="Local .tar shards: paths or brace patterns (name-{000000..000009}.tar)")
    latents: Literal["auto", "ignore"] = Field(
        "auto",
        description="auto: read each sample's latent.npy, condition, class and lineage back when the shards were made "
        "by this manifest's generator (a data++ dataset to keep working on); ignore: images only",
    )


def shard_files(cfg: "ShardsConfig", resolve) -> list[Path]:
    import braceexpand

    urls = [cfg.urls] if isinstance(cfg.urls, str) else list(cfg.urls)
    paths = [resolve(u) for url in urls for u in braceexpand.braceexpand(url)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"urls: no such shard {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return paths


def first_record(path: Path) -> tuple[dict | None, bool]:
    """(the first sample's json, whether it has a latent.npy) of a shard, without reading on."""
    import json

    from synth.reading import iter_samples

    sample = next(iter_samples(path, limit=1), None)
    if sample is None:
        return None, False
    try:
        rec = json.loads(sample.get("json", b"null"))
    except ValueError:
        rec = None
    return rec if isinstance(rec, dict) else None, "latent.npy" in sample


def same_generator(record: dict | None, generator_step) -> bool:
    """Were these samples made by the manifest's generator (same plugin, same model)?"""
    if not record or generator_step is None:
        return False
    made = record.get("generator") or {}
    return made.get("name") == generator_step.name and made.get("model") == generator_step.option("model", made.get("model")) and made.get("revision") == generator_step.option("revision")


def count_samples(path: Path) -> int:
    """Samples in a shard: from synth's own .stats.json beside it when there is one (no read of
    the tar), else by walking the tar's member headers."""
    import json

    stats = path.with_name(path.name[: -len(".tar")] + ".stats.json") if path.name.endswith(".tar") else None
    if stats is not None and stats.is_file():
        try:
            return int(json.loads(stats.read_text())["count"])
        except (ValueError, KeyError, OSError):
            pass
    keys, last = 0, None
    with tarfile.open(path, mode="r:") as tar:
        for m in tar:
            key = m.name.rsplit("/", 1)[-1].partition(".")[0]
            if m.isfile() and key != last:
                keys, last = keys + 1, key
    return keys


class ShardsSource(SourceStage):
    """Read images (seg.png and cls when present) from WebDataset shards, in shard order."""

    name = "shards"
    kind = "source"
    Config = ShardsConfig
    scores = frozenset()

    @classmethod
    def planned_size(cls, config, plan):
        return _sized(config)

    @classmethod
    def latents_out(cls, config, plan: PlanContext) -> bool | None:
        if config.latents == "ignore":
            return False
        try:
            paths = shard_files(config, plan.resolve_path)
            rec, has = first_record(paths[0])
        except (UsageError, tarfile.TarError, OSError):
            return False
        return has and same_generator(rec, plan.generator)

    @classmethod
    def check_plan(cls, config, plan: PlanContext) -> list[str]:
        try:
            paths = shard_files(config, plan.resolve_path)
            total = sum(count_samples(p) for p in paths)
        except UsageError as e:
            return [str(e)]
        except (tarfile.TarError, OSError) as e:
            return [f"urls: not a readable shard: {e}"]
        return _too_few(plan, total, f"the {len(paths)} shards hold only")

    def setup(self) -> None:
        try:
            paths = shard_files(self.config, self.context.resolve_path)
        except UsageError as e:
            raise UsageError(f"{self.name}.{e}") from None
        # An index of member offsets: reading sample i later is one seek, whatever shard it is in.
        self.entries: list[tuple[Path, str, dict[str, tuple[int, int]]]] = []
        for path in paths:
            try:
                with tarfile.open(path, mode="r:") as tar:
                    current, fields = None, {}
                    for m in tar:
                        if not m.isfile():
                            continue
                        key, _, field = m.name.rsplit("/", 1)[-1].partition(".")
                        if key != current and current is not None:
                            self.entries.append((path, current, fields))
                            fields = {}
                        current = key
                        fields[field] = (m.offset_data, m.size)
                    if current is not None:
                        self.entries.append((path, current, fields))
            except tarfile.TarError as e:
                raise UsageError(f"{self.name}.urls: {path} is not a readable tar: {e}") from None
        if not self.entries:
            raise UsageError(f"{self.name}.urls: the shards hold no samples")
        self.with_seg = all("seg.png" in f for _, _, f in self.entries)
        self.with_cls = all("cls" in f for _, _, f in self.entries)
        self.with_latents = False
        if self.config.latents == "auto" and all("latent.npy" in f and "json" in f for _, _, f in self.entries):
            gen = self.context.generator
            made = json.loads(self._read(self.entries[0][0], self.entries[0][2]["json"])).get("generator") or {}
            ours = gen.describe() if gen is not None else {}
            self.with_latents = gen is not None and all(made.get(k) == ours.get(k) for k in ("name", "model", "revision"))

    def num_available(self) -> int:
        return len(self.entries)

    def _read(self, path: Path, span: tuple[int, int]) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(span[0])
            return fh.read(span[1])

    def _load(self, i: int):
        if i >= len(self.entries):
            raise UsageError(f"{self.name}: dataset.num_samples asks for sample {i}, the shards hold {len(self.entries)}")
        path, key, fields = self.entries[i]
        field = next((f for f in SHARD_IMAGE_FIELDS if f in fields), None)
        if field is None:
            raise SkipSample(f"no image field: sample {key} has {sorted(fields)}")
        img = open_image(self._read(path, fields[field]))
        image = prepare_image(img, self.config.size, self.config.resize)
        seg = None
        if self.with_seg:
            seg = prepare_mask(open_image(self._read(path, fields["seg.png"])), img.size, self.config.size, self.config.resize, len(self.context.classes) or None)
        record = {"index": i, "source": {"kind": "shards", "shard": path.name, "key": key}, "lineage": [{"op": "read", "source": "shards", "shard": path.name, "key": key}]}
        if self.with_latents:  # a data++ sample: its latent, condition, class and history come along
            old = json.loads(self._read(path, fields["json"]))
            record["latent"] = np.load(io.BytesIO(self._read(path, fields["latent.npy"])), allow_pickle=False).astype(np.float32)
            record["condition"] = old.get("condition") or {}
            record["class"] = old.get("class")
            record["lineage"] = list(old.get("lineage") or []) + record["lineage"]
            record["decode"] = old.get("decode") if image.shape == np.asarray(img).shape else None
        if self.with_cls:
            try:
                record["class"] = int(self._read(path, fields["cls"]).decode().strip())
            except ValueError:
                raise SkipSample(f"bad cls: sample {key} has a non-integer class") from None
        return image, seg, record

    def _name_of(self, i: int) -> str:
        path, key, _ = self.entries[i]
        return f"{path.name}: sample {key}"

    def produce(self, indices: Sequence[int]) -> Batch:
        batch = _assemble(self.name, indices, self._load, self.with_seg, self._name_of)
        if self.with_latents:
            lat = [r.pop("latent") for r in batch.records]
            batch.latents = np.stack(lat) if lat else None
        return batch
