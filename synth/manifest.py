"""Manifest: a TOML file, validated in two passes before any model loads.

Pass 1 checks the engine's own fields ([dataset], [run], the shape of [generator] and
[[stage]]). Pass 2 loads the allowed plugins and validates each generator/stage table against
that plugin's own config model. Every problem of both passes is reported at once, each with
its location (``stage[2].radius: ...``).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import refs
from .errors import ManifestError, UsageError
from .plugins import Registry, load_registry
from .protocols import DatasetStage, PlanContext, PluginConfig, Resources, SourceStage
from .threads import ThreadsSetting

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# What names can hold: sample keys are s%08d (more would break their sort order) and shards
# <name>-%06d.tar.
MAX_SAMPLES = 10**8
MAX_SHARDS = 10**6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatasetConfig(_Strict):
    """What the dataset is; every field here is part of the manifest hash except `output`."""

    name: str = Field("synth", description="Shard name prefix: <name>-000000.tar")
    output: str = Field("out", description="Output folder, relative to the manifest's folder")
    # strict: TOML's `true` or `16.0` is not a count
    num_samples: int = Field(gt=0, le=MAX_SAMPLES, strict=True, description="Number of source samples (seeds or input images)")
    shard_size: int = Field(1000, gt=0, strict=True, description="Source samples per shard (one task each)")
    seed: int = Field(0, ge=0, strict=True, description="Manifest seed; all randomness derives from it")
    classes: list[str] = Field(default_factory=list, description="Class names, index = class id")
    palette: list[tuple[int, int, int]] | None = Field(None, description="RGB colour per class for previews (default: a fixed palette)")
    image_format: Literal["png", "jpg", "webp"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100, strict=True, description="Quality for jpg/webp")
    latent_dtype: Literal["float16", "float32"] = "float16"
    license: str | None = Field(None, description="Licence of the data; defaults to the generator's")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME_RE.match(v):
            raise ValueError("use only letters, digits, '_' and '-' (it names the shards)")
        return v

    @field_validator("palette")
    @classmethod
    def _palette(cls, v):
        if v is not None and any(not 0 <= c <= 255 for rgb in v for c in rgb):
            raise ValueError("colours are [r, g, b] with values 0..255")
        return v

    @model_validator(mode="after")
    def _palette_fits(self):
        if self.palette is not None and len(self.palette) != len(self.classes):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(self.classes)} classes")
        shards = -(-self.num_samples // self.shard_size)
        if shards > MAX_SHARDS:
            raise ValueError(f"{self.num_samples} samples in shards of {self.shard_size} make {shards} shards; shard names hold at most {MAX_SHARDS} (raise shard_size)")
        return self


class RunConfig(_Strict):
    """How to execute; not part of the dataset's identity except batch_size."""

    batch_size: int = Field(16, gt=0, strict=True, description="Samples per model call")
    workers: int = Field(2, ge=1, strict=True, description="Threads encoding images and writing shards")
    threads: ThreadsSetting = Field(
        None,
        description="Threads of the model library (torch intra-op): a count, or \"auto\" for the cores minus the machine's load now; "
        "default: OMP_NUM_THREADS, else the cores (the same on every run: torch's CPU bytes depend on the count; synth.threads)",
    )
    executor: str = Field(
        "local",
        description="Who runs the shard tasks: local (this process), ray, or another registered executor; an executor's own "
        "options go in its table, [run.<executor>] (e.g. [run.ray] address = \"auto\")",
    )


class PluginRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class EngineManifest(_Strict):
    plugins: list[str] = Field(default_factory=list, description="Third-party plugins to load")
    dataset: DatasetConfig
    run: RunConfig = Field(default_factory=RunConfig)
    generator: PluginRef | None = None
    stage: list[PluginRef] = Field(default_factory=list)


@dataclass
class Step:
    """A configured generator or stage: class + validated config + where it came from."""

    where: str  # e.g. "stage[1]"
    name: str
    cls: type
    config: PluginConfig

    def dump(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.identity()}

    def option(self, key: str, default: Any = None) -> Any:
        """One of its configured options by name (``model``, ``revision``), or ``default``."""
        return self.config.model_dump().get(key, default)

    def label(self) -> str:
        """How messages name it: its model when it has one, else its plugin name."""
        return str(self.option("model") or self.name)


@dataclass
class Manifest:
    path: Path
    text: str
    data: dict[str, Any]
    dataset: DatasetConfig
    run: RunConfig
    generator: Step | None
    stages: list[Step]
    registry: Registry
    plugins: list[str]
    tables: dict[str, PluginConfig]  # plugin tables (register_tables), e.g. "fit"
    executors: dict[str, PluginConfig] = field(default_factory=dict)  # [run.<executor>] tables, validated by each executor's Config

    @property
    def folder(self) -> Path:
        return self.path.parent

    def output_dir(self, override: str | Path | None = None) -> Path:
        if override is not None:
            return Path(override).expanduser().resolve()
        out = Path(self.dataset.output).expanduser()
        return (out if out.is_absolute() else self.folder / out).resolve()

    def output_location(self, override: str | Path | None = None) -> str:
        """The output folder, or a URL (s3://, memory://, ...) kept as given."""
        given = override if override is not None else self.dataset.output
        if "://" in str(given):
            return str(given)
        return str(self.output_dir(override))

    def resources(self) -> Resources:
        """What one worker holding the whole pipeline needs: the generator's and every stage's
        declared resources together (see ``Resources.of_pipeline``). Executors place by it."""
        steps = ([self.generator] if self.generator else []) + list(self.stages)
        return Resources.of_pipeline([step.cls.resources(step.config) for step in steps])

    def identity(self) -> dict[str, Any]:
        """Everything that decides the dataset's bytes (the hash covers exactly this)."""
        dataset = self.dataset.model_dump(mode="json")
        dataset.pop("output")
        return {
            "dataset": dataset,
            "batch_size": self.run.batch_size,
            "generator": self.generator.dump() if self.generator else None,
            "stages": [s.dump() for s in self.stages],
        }

    @property
    def hash(self) -> str:
        canon = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


def _loc(prefix: str, loc) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_MESSAGES = {"extra_forbidden": "unknown field", "missing": "required field missing"}


def format_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        msg = _MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, ")  # a validator's own sentence
        if err["type"] not in _MESSAGES and "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
        problems.append(f"{_loc(prefix, err['loc'])}: {msg}")
    return problems


def read_toml(path: Path) -> tuple[str, dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such manifest file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, expected a manifest .toml file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read manifest: {e}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML: {e}") from None


def load_manifest(path: str | Path, text: str | None = None) -> Manifest:
    """Load and validate a manifest file; with ``text``, that text stands for the file's content
    (a worker on another machine gets the manifest's text, resolved against the same path)."""
    path = Path(path).expanduser().resolve()
    if text is None:
        text, data = read_toml(path)
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: invalid TOML: {e}") from None
    problems: list[str] = []

    # The plugin list is needed to load the registry even when other engine fields are wrong.
    extra_plugins = data.get("plugins", []) if isinstance(data.get("plugins", []), list) else []
    registry = load_registry([str(p) for p in extra_plugins])
    problems += [f.line() for f in registry.failures]

    tables: dict[str, PluginConfig] = {}
    engine_data = {k: v for k, v in data.items() if k not in registry.tables}
    executors: dict[str, PluginConfig] = {}
    if isinstance(data.get("run"), dict):
        run_data = dict(data["run"])
        executors = _executor_tables(registry, run_data, problems)
        engine_data["run"] = run_data
    for name, model in registry.tables.items():
        if name in data:
            try:
                tables[name] = model.model_validate(data[name])
            except ValidationError as e:
                problems += format_errors(e, name)
    try:
        engine = EngineManifest.model_validate(engine_data)
    except ValidationError as e:
        problems += format_errors(e)
        engine = None

    generator = None
    stages: list[Step] = []
    gen_raw = data.get("generator")
    if isinstance(gen_raw, dict) and isinstance(gen_raw.get("name"), str):
        generator = _validate_step(registry, "generator", gen_raw, "generator", problems)
        if generator is not None:
            refs.validate(registry, generator.config, "generator", problems)
    stage_raw = data.get("stage", [])
    stages_ok = True
    if isinstance(stage_raw, list):
        for i, raw in enumerate(stage_raw):
            if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                # enabled = false switches a stage off (a sweep or a search turns it on and off);
                # it is still validated, so a switched-off stage with a typo is caught now, not later
                enabled = raw.get("enabled", True)
                if not isinstance(enabled, bool):
                    problems.append(f"stage[{i}].enabled: must be true or false, got {enabled!r}")
                    stages_ok = False
                    continue
                step = _validate_step(registry, "stage", {k: v for k, v in raw.items() if k != "enabled"}, f"stage[{i}]", problems)
                if step:
                    refs.validate(registry, step.config, step.where, problems)
                    if enabled:
                        stages.append(step)
                else:
                    stages_ok = False

    if engine is not None and engine.run.executor not in registry.executors:
        try:
            registry.executor(engine.run.executor, "run.executor")
        except UsageError as e:
            problems.append(str(e))
    if engine is not None and stages_ok and (generator is not None or "generator" not in data):
        if not stages:
            default = registry.default_source()
            if default is None:
                problems.append("no [[stage]] given, and no installed plugin offers a default source stage")
            else:
                stages = [_validate_step(registry, "stage", {"name": default}, "stage[0]", problems)]
        if stages and stages[0] is not None:
            default_classes = stages[0].cls.default_classes(stages[0].config) if issubclass(stages[0].cls, SourceStage) else None
            if not engine.dataset.classes and default_classes is not None:
                engine.dataset.classes = list(default_classes)
            problems += _check_pipeline(generator, stages)
            if not problems:
                problems += _check_plan(path.parent, engine, registry, generator, stages)

    if problems:
        raise ManifestError(path, problems)
    return Manifest(
        path=path,
        text=text,
        data=data,
        dataset=engine.dataset,
        run=engine.run,
        generator=generator,
        stages=stages,
        registry=registry,
        plugins=list(engine.plugins),
        tables=tables,
        executors=executors,
    )


def _executor_tables(registry: Registry, run_data: dict, problems: list[str]) -> dict[str, PluginConfig]:
    """Take the [run.<executor>] tables out of ``run_data`` and validate each against its
    executor's own Config. An executor's option written straight into [run] (where synth once
    read Ray's) is named with the table it belongs in."""
    out = {}
    for name in [k for k, v in run_data.items() if isinstance(v, dict)]:
        raw = run_data.pop(name)
        cls = registry.executors.get(name)
        if cls is None:
            try:
                registry.executor(name, f"run.{name}")
            except UsageError as e:
                problems.append(f"{e} ([run.{name}] is that executor's table)")
            continue
        try:
            out[name] = cls.Config.model_validate(raw)
        except ValidationError as e:
            problems += format_errors(e, f"run.{name}")
    own = set(RunConfig.model_fields)
    for key in [k for k in run_data if k not in own]:
        owners = sorted(n for n, cls in registry.executors.items() if key in cls.Config.model_fields)
        if owners:
            run_data.pop(key)
            problems.append(f"run.{key}: an option of the {owners[0]} executor; write it in its table, [run.{owners[0]}] {key} = ...")
    return out


def _check_plan(folder: Path, engine: EngineManifest, registry: Registry, generator: Step | None, stages: list[Step]) -> list[str]:
    """Each step's own look at the whole plan (paths, scores, source sizes): see check_plan."""
    problems = []
    ctx = dict(manifest_dir=folder, classes=list(engine.dataset.classes), num_samples=engine.dataset.num_samples, registry=registry, generator=generator, stages=stages)
    if generator is not None:
        plan = PlanContext(**ctx, position=-1)
        problems += [_at("generator", p) for p in generator.cls.check_plan(generator.config, plan) + refs.check(plan, generator.config)]
    for i, step in enumerate(stages):
        plan = PlanContext(**ctx, position=i)
        # the step's own look, then what its tables refer to (a reference set, an extractor, ...)
        problems += [_at(step.where, p) for p in step.cls.check_plan(step.config, plan) + refs.check(plan, step.config)]
    if problems:
        return problems
    # The one capability check: what this configured generator offers where its files tell
    # (static_info), else what its class may offer at most.
    info = generator.cls.static_info(generator.config, PlanContext(**ctx, position=-1)) if generator is not None else None
    caps = (info or {}).get("capabilities")
    if caps is None and generator is not None:
        caps = generator.cls.capabilities
    for step in stages:
        missing = sorted(step.cls.requires - caps) if caps is not None else []
        if missing:
            problems.append(f"{step.where}: stage {step.name!r} needs {missing}, which {generator.label()} does not offer")
    return problems + _check_latents_and_labels(stages, lambda i: PlanContext(**ctx, position=i))


def _check_latents_and_labels(stages: list[Step], plan_at) -> list[str]:
    """Two policies, followed through the pipeline (see Stage.latents and Stage.seg):
    an operator on latents needs an earlier stage that gives them; a stage that changes what
    images show drops their seg labels, so a labeller must follow it."""
    problems = []
    have_latents, gave = False, None
    made_seg, dropped = None, None
    for i, step in enumerate(stages):
        effect = getattr(step.cls, "latents", None)
        if effect == "needs" and not have_latents:
            why = f" ({gave})" if gave else ""
            problems.append(f"{step.where}: stage {step.name!r} works on latents, but no earlier stage gives them{why}; add an invert stage before it")
        out = step.cls.latents_out(step.config, plan_at(i))
        if out is not None:
            have_latents = out
            gave = None if out else f"{step.where} {step.name!r} has none" if i == 0 else f"{step.where} {step.name!r} drops them"
        seg = getattr(step.cls, "seg", None)
        if seg == "makes":
            made_seg, dropped = step, None
        elif seg == "drops" and made_seg is not None and dropped is None:
            dropped = step
    if dropped is not None:
        problems.append(
            f"{dropped.where}: stage {dropped.name!r} changes what images show, so it drops the labels {made_seg.where} "
            f"{made_seg.name!r} made; add a labeller (e.g. pixelhead) after it, or label before nothing changes"
        )
    return problems


_FIELD_FIRST = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


def _at(where: str, problem: str) -> str:
    """"stage[0]" + "path: no such folder" -> "stage[0].path: no such folder"; a problem that
    names no field first gets "stage[0]: ..."."""
    return f"{where}.{problem}" if _FIELD_FIRST.match(problem) and not problem.startswith("dataset.") else f"{where}: {problem}"


def source_step(registry: Registry, raw: dict, where: str, problems: list[str] | None = None) -> Step:
    """A source-stage table embedded in another stage's config (e.g. a labeller's annotations).

    Validated like a top-level stage; with ``problems`` given, errors are appended there (and the
    result may be None), else raised as one UsageError.
    """
    collect = [] if problems is None else problems
    step = None
    if not isinstance(raw.get("name"), str):
        collect.append(f"{where}.name: a source stage name is needed")
    else:
        step = _validate_step(registry, "stage", raw, where, collect)
        if step is not None and not issubclass(step.cls, SourceStage):
            collect.append(f"{where}: {step.name!r} is a {step.cls.kind} stage, a source stage is needed here")
            step = None
    if problems is None and collect:
        raise UsageError("; ".join(collect))
    return step


def stage_step(registry: Registry, raw: dict, where: str, problems: list[str] | None = None, kinds: tuple[str, ...] = ("transform",)) -> Step:
    """A stage table embedded in another stage's config (e.g. a labeller), of one of ``kinds``."""
    collect = [] if problems is None else problems
    step = None
    if not isinstance(raw.get("name"), str):
        collect.append(f"{where}.name: a stage name is needed")
    else:
        step = _validate_step(registry, "stage", raw, where, collect)
        if step is not None and step.cls.kind not in kinds:
            collect.append(f"{where}: {step.name!r} is a {step.cls.kind} stage, a {' or '.join(kinds)} stage is needed here")
            step = None
    if problems is None and collect:
        raise UsageError("; ".join(collect))
    return step


def _validate_step(registry: Registry, kind: str, raw: dict, where: str, problems: list[str]) -> Step | None:
    name = raw["name"]
    try:
        cls = registry.generator(name, f"{where}.name") if kind == "generator" else registry.stage(name, f"{where}.name")
    except UsageError as e:
        problems.append(str(e))
        return None
    body = {k: v for k, v in raw.items() if k != "name"}
    try:
        config = cls.Config.model_validate(body)
    except ValidationError as e:
        problems += format_errors(e, where)
        return None
    return Step(where=where, name=name, cls=cls, config=config)


def _check_pipeline(generator: Step | None, stages: list[Step]) -> list[str]:
    """Cross-field rules no single config model can see."""
    problems = []
    if not issubclass(stages[0].cls, SourceStage):
        problems.append(f"{stages[0].where}: the first stage must be a source stage, {stages[0].name!r} is a {stages[0].cls.kind} stage")
    seen_dataset = False
    for step in stages:
        if step is not stages[0] and issubclass(step.cls, SourceStage):
            problems.append(f"{step.where}: only the first stage may be a source stage ({step.name!r} is one)")
        if issubclass(step.cls, DatasetStage):
            seen_dataset = True
        elif seen_dataset:
            problems.append(f"{step.where}: per-sample stage {step.name!r} cannot follow a dataset-level stage")
        if step.cls.requires and generator is None:
            problems.append(f"{step.where}: stage {step.name!r} needs a [generator] table")
    return problems


def json_schema(registry: Registry) -> dict[str, Any]:
    """JSON Schema of a manifest with every loaded plugin's config, for editors."""
    from pydantic import create_model

    def variants(table: dict[str, type], switch: bool = False):
        out = []
        for name, cls in sorted(table.items()):
            extra = {"enabled": (bool, Field(True, description="false: the stage is switched off (still validated)"))} if switch else {}
            model = create_model(
                f"{cls.__name__}Entry",
                __base__=cls.Config,
                name=(Literal[name], Field(description=(cls.__doc__ or "").strip().split("\n")[0])),
                **extra,
            )
            out.append(model)
        return out

    gens = variants(registry.generators)
    stages = variants(registry.stages, switch=True)
    from typing import Union

    Run = create_model("RunConfigWithExecutors", __base__=RunConfig, **{name: (cls.Config | None, None) for name, cls in sorted(registry.executors.items())})
    Full = create_model(
        "SynthManifest",
        __base__=_Strict,
        plugins=(list[str], Field(default_factory=list)),
        dataset=(DatasetConfig, ...),
        run=(Run, Field(default_factory=Run)),
        generator=(Union[tuple(gens)] | None, None) if gens else (dict | None, None),
        stage=(list[Union[tuple(stages)]], Field(default_factory=list)) if stages else (list, []),
        **{name: (model | None, None) for name, model in sorted(registry.tables.items())},
    )
    schema = Full.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "synth manifest"
    return schema
