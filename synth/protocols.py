"""What a generator and a stage are. Plugins subclass these.

Both carry a pydantic ``Config`` model, so a manifest is validated before any model library is
imported, and a ``setup()`` that loads models once, before the first batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from .batch import Batch


class PluginConfig(BaseModel):
    """Base for generator and stage configs: unknown keys are errors, not silently ignored, and
    so are infinite or NaN numbers (TOML spells them inf and nan): no option means either."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Fields added after runs were made with this config: left out of the manifest's identity
    # (its hash) while they hold their default, so upgrading synth neither changes an earlier
    # manifest's hash (recorded in every sample) nor stops its run from resuming.
    added_later: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict[str, Any]:
        """The config as the manifest hash sees it (see ``added_later``; nested configs too)."""
        data = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in self.added_later and value == type(self).model_fields[name].get_default(call_default_factory=True):
                data.pop(name, None)
            elif isinstance(value, PluginConfig):
                data[name] = value.identity()
        return data


@dataclass(frozen=True)
class Resources:
    """What one step needs of the worker that holds it, declared by its ``resources`` (None:
    not said). Executors read the whole pipeline's (``Manifest.resources``) to place workers:
    Ray gives each actor these CPUs, GPUs and memory unless [run.ray] says otherwise."""

    cpus: float | None = None
    gpus: float | None = None  # a fraction shares one GPU between workers
    memory_gb: float | None = None

    @staticmethod
    def of_pipeline(parts: Sequence["Resources"]) -> "Resources":
        """One worker holds every step at once: the most CPUs and GPUs any step asks for (steps
        run one after another on them), and the sum of their memory (all stay loaded)."""

        def most(values):
            known = [v for v in values if v is not None]
            return max(known) if known else None

        memory = [p.memory_gb for p in parts if p.memory_gb is not None]
        return Resources(
            cpus=most(p.cpus for p in parts),
            gpus=most(p.gpus for p in parts),
            memory_gb=sum(memory) if memory else None,
        )


@dataclass
class RunContext:
    """What a generator or stage may know about the run it is part of."""

    seed: int
    manifest_dir: Path
    classes: list[str]
    registry: Any  # synth.plugins.Registry
    generator: "Generator | None" = None
    extra: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 0  # the run's source samples ([dataset].num_samples)
    batch_size: int = 0  # the run's [run] batch_size (0: not in a run)
    latent_dtype: str = "float32"  # how latent.npy stores latents ([dataset].latent_dtype)
    quiet: bool = False  # no progress display (synth run --quiet): pass as disable= to synth.bars.progress_bar

    def resolve_path(self, path: str | Path) -> Path:
        """Relative paths in a manifest resolve against the manifest's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.manifest_dir / p)

    def as_stored(self, latents: np.ndarray) -> np.ndarray:
        """Latents as latent.npy will hold them (float16 rounds): decode these, so that the stored
        latent regenerates the image exactly."""
        return np.asarray(latents).astype(self.latent_dtype).astype(np.float32)


@dataclass
class PlanContext:
    """What a generator or stage may look at while a manifest validates, before anything loads:
    the whole pipeline, with every step's validated config. Used by ``check_plan``."""

    manifest_dir: Path
    classes: list[str]
    num_samples: int
    registry: Any  # synth.plugins.Registry
    generator: Any  # synth.manifest.Step | None
    stages: list[Any]  # synth.manifest.Step, in order
    position: int = -1  # the checked stage's index in ``stages`` (-1: the generator)

    def resolve_path(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.manifest_dir / p)

    def image_size(self) -> tuple[int, int] | None:
        """(height, width) of the run's samples as its source stage plans them, or None."""
        first = self.stages[0] if self.stages else None
        if first is None or not issubclass(first.cls, SourceStage):
            return None
        return first.cls.planned_size(first.config, self)

    def earlier(self) -> list[Any]:
        return self.stages[: max(self.position, 0)]

    def scores_before(self) -> set[str] | None:
        """Scores recorded by the stages before this one; None when one of them does not declare
        what it records (a plugin stage without ``scores``), so nothing can be concluded."""
        out: set[str] = set()
        for step in self.earlier():
            declared = getattr(step.cls, "scores", None)
            if declared is None:
                return None
            out |= set(declared)
        return out

    def check_score_recorded(self, score: str) -> list[str]:
        """For a filter on ``score``: a problem when no earlier stage records it (nothing can be
        said when an earlier plugin stage does not declare its ``scores``)."""
        known = self.scores_before()
        if known is None or score in known:
            return []
        have = ", ".join(sorted(known)) or "none"
        return [f"score {score!r} is recorded by no earlier stage (recorded before this one: {have}); add the stage that computes it first"]


class Generator:
    """The G of data++.

    capabilities: a subset of {"sample", "decode", "condition:prompt", "condition:class",
    "condition:tags", "invert", "features", "compose", "attention", "attention_tokens", "contrast", "hspace"}; stages check
    them before they need them.
    """

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    capabilities: ClassVar[frozenset[str]] = frozenset({"sample", "decode"})
    # The generator's own option models for invert and features (typed, validated by the
    # generator); a stage may build one or pass a dict of the same fields.
    InvertOptions: ClassVar[type[PluginConfig]] = PluginConfig
    FeatureOptions: ClassVar[type[PluginConfig]] = PluginConfig
    # Where the generator's tensors live once set up (a torch device, or "cpu"): stages that
    # train or label on its features work there too.
    device: Any = "cpu"

    def __init__(self, config: PluginConfig, context: RunContext):
        self.config = config
        self.context = context

    @classmethod
    def check_plan(cls, config: PluginConfig, plan: PlanContext) -> list[str]:
        """Problems visible from the whole manifest without loading weights (e.g. a ``builtin:``
        model that no plugin registers, a local model folder that does not exist, templates for
        a class not in ``plan.classes``). Called while validating; one message per problem."""
        return []

    @classmethod
    def resources(cls, config: PluginConfig) -> Resources:
        """What a worker holding this generator needs (see ``Resources``); default: not said."""
        return Resources()

    @classmethod
    def static_info(cls, config: PluginConfig, plan: PlanContext) -> dict[str, Any] | None:
        """What this configured generator is, read without loading weights (e.g. from a model's
        config files): {"capabilities": frozenset, "latent_shape": tuple, "image_shape": (h, w, 3)};
        None, or a key missing, when unknown. Validation checks stages against it."""
        return None

    @classmethod
    def check_feature_options(cls, config: PluginConfig, options: dict[str, Any], plan: PlanContext) -> list[str]:
        """Problems with a stage's feature options (see ``feature_spec``) that show without
        loading weights, e.g. block names read from the model's config file."""
        return []

    def setup(self) -> None:
        """Load weights. Called once per process, before the first batch."""

    def describe(self) -> dict[str, Any]:
        """Identity recorded with every sample: name, model id, library version, licence; under
        "runtime", what the pixels also depend on but another machine may differ in (torch,
        CUDA, device name): regenerate names those differences rather than refusing."""
        return {"name": self.name}

    def image_shape(self) -> tuple[int, int, int] | None:
        """(H, W, 3) of the images ``decode`` makes; None before set-up or when it varies."""
        return None

    def latent_shape(self) -> tuple[int, ...] | None:
        """The shape of one sample's latent (a row of ``sample_latents``); None when unknown."""
        return None

    def supports(self, capability: str) -> bool:
        """Whether this generator offers ``capability`` (one of ``capabilities``): the one check
        stages use before calling an optional member (invert, features, compose, ...)."""
        return capability in self.capabilities

    def condition(self, index: int) -> dict[str, Any]:
        """The condition of global sample ``index`` (e.g. {"prompt": ..., "class": 2}).

        Must depend only on the index and the config, so shards can be made in any order.
        """
        return {}

    def sample_latents(self, indices: Sequence[int], seed: int) -> np.ndarray:
        """Initial latents for these sample indices (one row each), from (seed, index) only."""
        raise NotImplementedError

    def decode(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int) -> np.ndarray:
        """Images (B, H, W, 3) uint8 from latents and conditions. A decode may add to a
        condition what it learnt (a safety checker's flag); setting ``condition["withheld"]`` to
        a reason makes the run drop that sample with it."""
        raise NotImplementedError

    def invert(self, images: np.ndarray, conditions: list[dict], options: Any = None) -> np.ndarray:
        """Initial latents that decode back to about these images (capability "invert");
        ``options``: an instance of the generator's ``InvertOptions`` or a dict the generator
        validates into one (a wrong option is a one-line error naming it)."""
        raise NotImplementedError(f"generator {self.name!r} cannot invert images")

    def edit(self, images: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, strength: float) -> np.ndarray:
        """Capability "edit" (SDEdit): images (B, H, W, 3) uint8 noised part-way (``strength``
        in (0, 1]: 1 is the whole path) and denoised under ``conditions``; the noise of each row
        from (seed, its index)."""
        raise NotImplementedError(f"generator {self.name!r} cannot edit images")

    def inversion_condition(self, condition: dict[str, Any], index: int, guided: str = "negative_prompt") -> dict[str, Any]:
        """The condition an image is inverted under and its latent decoded with afterwards: the
        generator's own condition for ``index`` where the image brings none it can use, and for a
        guided model, with ``guided = "negative_prompt"``, the prompt as its own negative
        (negative-prompt inversion) so that guidance does not pull the decode off the inverted path."""
        return dict(condition)

    def features(
        self, images: np.ndarray, conditions: list[dict], spec: Any, latents: np.ndarray | None = None, decode: Sequence[dict] | None = None
    ) -> list[Any]:
        """Per-pixel features of images (B, H, W, 3) uint8, real or generated, as a pyramid:
        one (B, C_i, h_i, w_i) map per feature source, upsampled by the consumer. ``spec`` says
        which (the generator's own spec type, built by ``feature_spec``). ``latents``: the
        samples' initial latents when they are generated, for specs that read a sample's own
        denoising path; None for real images. ``decode``: with latents, each sample's
        {"index", "seed"} as it was decoded (its record's "decode"), so a sampler that adds
        fresh noise at every step can be replayed with the same noise."""
        raise NotImplementedError(f"generator {self.name!r} exposes no per-pixel features")

    def feature_spec(self, options: Any) -> Any:
        """Turn a stage's feature options (the generator's ``FeatureOptions``, or a dict it
        validates into one: blocks, timesteps, ...) into a spec; errors name the option."""
        raise NotImplementedError(f"generator {self.name!r} exposes no per-pixel features")

    def feature_shapes(self, spec: Any) -> list[tuple[int, int, int]] | None:
        """One image's pyramid as (C, h, w) per map, in the order ``features`` returns them,
        without running the model (what a stage needs to say its memory before it starts);
        None when unknown."""
        return None

    def named_classes(self, conditions: list[dict]) -> np.ndarray:
        """(B, C) bool: which of [dataset].classes each condition names (its tags, its prompt's
        class words, its class), without running the model: what a labeller from the
        conditioning can label."""
        out = np.zeros((len(conditions), len(self.context.classes)), bool)
        for i, cond in enumerate(conditions):
            if cond.get("class") is not None and 0 <= int(cond["class"]) < out.shape[1]:
                out[i, int(cond["class"])] = True
        return out

    def attention_spec(self, options: dict[str, Any]) -> Any:
        """Turn a stage's attention options (timesteps, blocks, self_attention) into a spec."""
        raise NotImplementedError(f"generator {self.name!r} exposes no attention maps")

    def attention(self, images: np.ndarray, conditions: list[dict], spec: Any, latents: np.ndarray | None = None, decode: Sequence[dict] | None = None) -> Any:
        """Capability "attention": where each class the conditions name is attended, per pixel (an
        ``AttentionMaps``-like object: ``classes`` (B, C, H, W), ``named`` (B, C), ``null``
        (B, H, W), ``self_attention`` (B, N, N) or None and its ``self_size``). ``latents`` and
        ``decode`` as for ``features``: a generated sample is read along its own path."""
        raise NotImplementedError(f"generator {self.name!r} exposes no attention maps")

    def attention_tokens(self, images: np.ndarray, conditions: list[dict], masks: np.ndarray, spec: Any, latents: np.ndarray | None = None,
                         decode: Sequence[dict] | None = None, background: int = 0, steps: int = 200, lr: float = 0.05, batch: int = 16) -> tuple[np.ndarray, dict]:
        """Capability "attention_tokens": one attribution token per class, optimised on labelled
        images (``masks`` (B, H, W) class ids) so that its attention matches their pixels (OVAM);
        returns (C, D) tokens (NaN rows: classes left to their own tokens) and what the fit
        measured. ``attention_spec({..., "tokens": tokens})`` then reads each class from its token;
        the model and its images are unchanged."""
        raise NotImplementedError(f"generator {self.name!r} cannot fit attribution tokens")

    def contrast(self, images: np.ndarray, conditions: list[dict], spec: Any, latents: np.ndarray | None = None, decode: Sequence[dict] | None = None) -> Any:
        """Capability "contrast": where the prediction moves when each named class leaves the
        condition (DiffEdit), returned as ``attention`` returns its maps."""
        raise NotImplementedError(f"generator {self.name!r} cannot contrast its conditions")

    def compose(self, latents_a: np.ndarray, latents_b: np.ndarray, masks: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, blend_until: float = 0.7) -> np.ndarray:
        """Capability "compose": images (B, H, W, 3) uint8 that show A where ``masks`` (B, H, W)
        are true and B elsewhere, denoised together (A's path inside the mask until
        ``blend_until`` of the steps, then one path), so the seam is the model's own."""
        raise NotImplementedError(f"generator {self.name!r} cannot compose two latents")

    def hspace_spec(self, options: dict[str, Any]) -> Any:
        """Capability "hspace": turn options (block, until) into the spec of a semantic space
        (h-space: a UNet block's output, shifted while the sampler is in its noisiest steps, as
        Asyrp edits; a generator may offer other spaces shifted the same way, as the diffusers
        one offers block "condition", the conditioning its cross-attention reads); errors name
        the option."""
        raise NotImplementedError(f"generator {self.name!r} has no h-space")

    def hspace_shape(self, spec: Any) -> tuple[int, ...]:
        """The shape of one sample's shift in that space."""
        raise NotImplementedError(f"generator {self.name!r} has no h-space")

    def hspace_activations(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, spec: Any) -> tuple[np.ndarray, float]:
        """Each sample's point in h-space (B, *hspace_shape) along its own sampling path, and
        the space's unit (its RMS): what principal directions there are computed from."""
        raise NotImplementedError(f"generator {self.name!r} has no h-space")

    def decode_shifted(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, shifts: np.ndarray, spec: Any) -> np.ndarray:
        """``decode`` with ``shifts`` (B, *hspace_shape) added in h-space; zero shifts give
        ``decode``'s images byte for byte."""
        raise NotImplementedError(f"generator {self.name!r} has no h-space")

    def hspace_gradients(self, latents: np.ndarray, conditions: list[dict], indices: Sequence[int], seed: int, spec: Any, objective: Any) -> tuple[np.ndarray, float]:
        """(B, *hspace_shape) gradients of ``objective`` (a function of a torch batch of the
        decoded images (B, 3, H, W) in [0, 1] returning (B,)) with respect to each sample's own
        shift at zero, and the RMS of the block's output there (the space's natural unit)."""
        raise NotImplementedError(f"generator {self.name!r} has no h-space")

    def bundled(self, kind: str) -> list[Path]:
        """Folders of ready-made artefacts of ``kind`` shipped with the model, read-only (e.g.
        "pixelheads": heads trained on its features, laid out as a stage's cache is, by key).
        A stage looks here after its own cache, so a model can ship what its quickstart needs."""
        return []

    def fingerprint(self) -> str:
        """Changes whenever the generator's outputs or features would (weights, settings): used
        as a cache key by stages that train on them."""
        import json

        return json.dumps(self.describe(), sort_keys=True, default=str)


class Stage:
    """One step of the pipeline. This class is the contract of the per-sample kinds, whose
    ``process`` takes a batch and returns one; sources subclass ``SourceStage`` and dataset-level
    stages ``DatasetStage``.

    kind: "transform" (same rows, new columns or values), "expand" (more rows, e.g. views),
    "filter" (fewer rows, each drop with a reason); "source" and "dataset" belong to the two
    subclasses below.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "transform"
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    # Capabilities the stage needs from the generator (checked before anything loads).
    requires: ClassVar[frozenset[str]] = frozenset()
    # Names of the scores the stage records in each sample's ``scores`` (so a later filter on a
    # score nobody records is caught while validating); None: not declared.
    scores: ClassVar[frozenset[str] | None] = None
    # What the stage does to latents: "makes" (generate, invert), "needs" (an operator on them),
    # "drops" (the images no longer decode from them); None: keeps them as they are.
    latents: ClassVar[str | None] = None
    # What it does to seg labels: "makes" (a labeller, a source with masks), "drops" (it changes
    # what an image shows; a labeller must follow); None: keeps them.
    seg: ClassVar[str | None] = None

    def __init__(self, config: PluginConfig, context: RunContext):
        self.config = config
        self.context = context

    @classmethod
    def resources(cls, config: PluginConfig) -> Resources:
        """What a worker holding this stage needs (see ``Resources``); default: not said."""
        return Resources()

    @classmethod
    def bounds(cls, config: PluginConfig) -> dict[str, Any] | None:
        """A filter that keeps a score within fixed bounds: {"score": name, "min": x, "max": y}
        (either bound may be missing), recorded in dataset.json so the report draws them."""
        return None

    @classmethod
    def check_plan(cls, config: PluginConfig, plan: PlanContext) -> list[str]:
        """Problems visible from the whole manifest without loading anything: a path that does
        not exist, a score no earlier stage records, more samples than a finite source holds, a
        class not in ``plan.classes``. ``plan.position`` is this stage's index (-2: a source
        embedded in another stage's table). Called while validating; one message each."""
        return []

    def setup(self) -> None:
        """Load models. Called once per process, before the first batch."""

    def report(self) -> dict[str, Any] | None:
        """After set-up: what the run should record about this stage's set-up (JSON-able; a
        "files" entry maps file names to bytes, e.g. a PNG curve), written beside dataset.json
        and into it under "reports" (e.g. the radii sigma = "auto" chose)."""
        return None

    @classmethod
    def latents_out(cls, config: PluginConfig, plan: PlanContext) -> bool | None:
        """Whether samples carry latents after this stage (None: as before it)."""
        return {"makes": True, "drops": False}.get(cls.latents or "")

    def share(self) -> Any:
        """After ``setup()``: what another process needs to set this stage up identically without
        redoing costly or run-dependent work (a trained head, a calibrated threshold), picklable;
        None when plain ``setup()`` elsewhere gives the same stage. Executors that run shards in
        several processes set up one, then ``adopt()`` its result in the others, so a shard's
        content never depends on which process made it."""
        return None

    def adopt(self, shared: Any) -> None:
        """Set up from what ``share()`` returned in another process (instead of ``setup()``)."""
        self.setup()

    def process(self, batch: Batch) -> Batch:
        """Transform, expand and filter stages: a batch in, a batch out."""
        raise NotImplementedError


class SourceStage(Stage):
    """The first stage of a run: makes the samples for global indices (generated, read, drawn
    from a procedural world). Also the kind a stage's embedded source table names (a reference
    set, labelled examples)."""

    kind: ClassVar[str] = "source"
    # The one a manifest with a [generator] and no [[stage]] starts with (one per install).
    default_source: ClassVar[bool] = False

    @classmethod
    def default_classes(cls, config: PluginConfig) -> list[str] | None:
        """The class names a run takes when [dataset].classes is empty (a world's own); None."""
        return None

    @classmethod
    def planned_size(cls, config: PluginConfig, plan: PlanContext) -> tuple[int, int] | None:
        """(height, width) of the images it will make, known without loading anything (a size
        option, the generator's config); None when only reading tells."""
        return None

    @classmethod
    def latents_out(cls, config: PluginConfig, plan: PlanContext) -> bool | None:
        """Whether its samples carry latents. A source that only sometimes has them (shards)
        looks at its input here."""
        return cls.latents == "makes"

    def num_available(self) -> int | None:
        """How many samples it holds (a folder's images); None: as many as asked."""
        return None

    def produce(self, indices: Sequence[int]) -> Batch:
        """The samples for these global indices."""
        raise NotImplementedError


class DatasetStage(Stage):
    """Runs once after every shard task, on the run's ``synth.table.SampleTable`` (each sample's
    key, index, class, scores and the features it ``wants``): selects which samples the final
    shards keep, or measures the final dataset."""

    kind: ClassVar[str] = "dataset"
    selects: ClassVar[bool] = False  # True: select() decides which samples the final shards keep
    measures: ClassVar[bool] = False  # True: measure() returns the dataset's metrics (what sweep plots)

    @classmethod
    def wants(cls, config: PluginConfig) -> list[Any]:
        """Extractor tables whose features every sample needs (computed during the shard tasks,
        kept beside each shard)."""
        return []

    def select(self, table: Any) -> tuple[np.ndarray, list[str], list[str]]:
        """Selecting stages: (keep mask, reason and detail per row) over the rows earlier
        selecting stages kept. Deterministic."""
        raise NotImplementedError

    def measure(self, table: Any) -> dict[str, Any] | None:
        """Numbers about the final dataset (its kept rows), written into dataset.json under
        "metrics" and into the card; name them and their order in "figures" ([[key, label], ...])."""
        return None


STAGE_KINDS = ("source", "transform", "expand", "filter", "dataset")


class Executor:
    """Runs a run's pending shard tasks (a ``synth.engine.ShardJob``) and returns one report per
    worker: {"worker", "shards", "samples", "seconds", "failures", ...}. Every shard is made with
    ``synth.engine.make_shards``, so all executors write the same bytes. Registered with
    ``register_executors``; chosen by ``[run] executor`` or ``--executor``. Its own options are
    its ``Config``, read from the manifest's ``[run.<name>]`` table with the command line's
    ``-X key=value`` on top; the core knows none of them."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    # Whether the shards are made on this machine: then the run's thread count (asked for, or
    # recorded by the folder's first run) is this machine's; workers elsewhere choose their own.
    in_process: ClassVar[bool] = False

    def __init__(self, run_config: Any, config: PluginConfig | None = None):
        self.run_config = run_config  # synth.manifest.RunConfig (batch size, threads, workers)
        self.config = config if config is not None else self.Config()  # [run.<name>] and -X options

    @classmethod
    def check_run(cls, run_config: Any, config: PluginConfig) -> list[str]:
        """Problems with running this way (a library not installed, an output it cannot reach)."""
        return []

    def run(self, job: Any, progress: Any) -> list[dict[str, Any]]:
        raise NotImplementedError


class FeatureExtractor:
    """Images -> one feature vector each, for fidelity, diversity, duplicates and metrics.

    Registered with ``register_extractors``; a stage names one with a table such as
    ``extractor = { name = "clip", model = "openai/clip-vit-base-patch32" }``, and asks
    ``synth.extractors.features(context, batch, table)``, which computes each sample's features
    once per run; a config field of type ``synth.refs.ExtractorRef`` is checked while validating
    (a misnamed extractor, a missing model file) with no code in the stage. ``embed_text`` is for
    extractors that also embed text (CLIP: clip_score)."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    # The cosine at or above which two images are near-duplicates, measured on real images (the
    # 1st percentile of their nearest-neighbour distances); None: not measured, so dedup needs
    # a threshold or a reference set.
    duplicate_cosine: ClassVar[float | None] = None

    def __init__(self, config: PluginConfig, context: RunContext):
        self.config = config
        self.context = context

    @classmethod
    def check_plan(cls, config: PluginConfig, plan: PlanContext) -> list[str]:
        """Problems visible without loading (a local model folder that does not exist)."""
        return []

    def setup(self) -> None:
        """Load weights, once per process."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, D) float32 features of (N, H, W, 3) uint8 images."""
        raise NotImplementedError

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 features of texts, in the images' space (for image-text agreement)."""
        raise NotImplementedError(f"extractor {self.name!r} does not embed text")


class Classifier:
    """An image classifier: images -> logits over its own class names, with its preprocessing.

    Registered with ``register_classifiers``; a stage names one with a table such as
    ``classifier = { name = "torch", path = "models/my-classifier" }`` and builds it with
    ``synth.classifiers.get(context, table)`` (set up once per process). ``classes`` is known
    after ``setup()``; ``image_size`` is the (height, width) it takes, None for any (it resizes).
    ``differentiable`` gives the logits of a torch batch in [0, 1] with gradients, for tools that
    ask which directions change a decision. A segmentation model sets ``per_pixel``: its
    ``differentiable`` logits are (N, C, H, W), one decision per pixel (feedback guidance takes
    their mean entropy); ``logits`` may then refuse."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig, context: RunContext):
        self.config = config
        self.context = context
        self.classes: list[str] = []
        self.image_size: tuple[int, int] | None = None
        self.per_pixel = False

    @classmethod
    def check_plan(cls, config: PluginConfig, plan: PlanContext) -> list[str]:
        """Problems visible without loading (a model folder that does not exist)."""
        return []

    def setup(self) -> None:
        """Load weights, once per process; sets ``classes`` (and ``image_size`` when fixed)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def logits(self, images: np.ndarray) -> np.ndarray:
        """(N, C) float32 logits of (N, H, W, 3) uint8 images over ``classes``."""
        raise NotImplementedError

    def differentiable(self, pixels: Any) -> Any:
        """Logits (N, C) of a torch tensor (N, 3, H, W) in [0, 1], differentiable in it."""
        raise NotImplementedError(f"classifier {self.name!r} gives no gradients")


class Probe:
    """Attribute probes: named, measurable attributes of images (a shape's colour, its size, the
    background) and when an edit changed them.

    Registered with ``register_probes``; ``synth discover`` names one with a table such as
    ``probe = { name = "shapes" }`` and uses it to say which attributes each discovered direction
    moves (and how many others a counterfactual changes: MNAC). ``attributes`` is known after
    ``setup()``; ``measure`` returns one array per attribute, a row per image (and may keep more
    under names starting with "_" for its own ``changed``, such as where an object is); ``changed`` says
    per image and attribute whether ``after`` differs from ``before`` by more than the probe's
    own threshold for that attribute (what a person would call a change)."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, config: PluginConfig, context: RunContext):
        self.config = config
        self.context = context
        self.attributes: list[str] = []

    @classmethod
    def check_plan(cls, config: PluginConfig, plan: PlanContext) -> list[str]:
        """Problems visible without loading (images the probe cannot read, classes it does not know)."""
        return []

    def setup(self) -> None:
        """Load what the probe needs, once per process; sets ``attributes``."""

    def measure(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Per attribute, (N,) or (N, k) values of (N, H, W, 3) uint8 images."""
        raise NotImplementedError

    def changed(self, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per attribute, (N,) bool: whether image i's attribute changed from ``before`` to ``after``."""
        raise NotImplementedError


class Task:
    """A downstream model and its score: it trains on labelled images (a synthetic dataset's
    samples) and scores on a labelled real validation set, so a search can rank datasets by what
    they teach rather than by how close they look to real images.

    Registered with ``register_tasks``; ``synth optimise`` names one in its space file
    (``[task] name = "segmentation"``), and a selection that asks what a sample teaches uses it
    through ``synth.tasks``. ``target`` says what a sample must carry: ``"seg"`` (class-id masks)
    or ``"class"`` (one class id). ``score`` names the figure a search maximises; ``evaluate``
    returns it first, then any others. Training is seeded: the same images, targets and seed give
    the same model."""

    name: ClassVar[str]
    Config: ClassVar[type[PluginConfig]] = PluginConfig
    target: ClassVar[str] = "seg"
    score: ClassVar[str] = "score"

    def __init__(self, config: PluginConfig, classes: list[str]):
        self.config = config
        self.classes = list(classes)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump()}

    def train(self, images: np.ndarray, targets: np.ndarray, seed: int) -> Any:
        """A model trained on (N, H, W, 3) uint8 images and their targets ((N, H, W) class ids
        for "seg", (N,) for "class")."""
        raise NotImplementedError

    def evaluate(self, model: Any, images: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Figures of ``model`` on labelled images, ``score`` first (higher is better)."""
        raise NotImplementedError

    def sample_gradients(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(N, D) float32: each image's gradient of the training loss in a fixed set of the
        model's parameters (its last layer is enough), for influence estimates."""
        raise NotImplementedError(f"task {self.name!r} gives no per-sample gradients")

    def save(self, model: Any, folder: Path, image_size: tuple[int, int]) -> None:
        """Write ``model`` (trained at ``image_size``, (height, width)) to ``folder`` in a form a
        registered classifier reads, so feedback guidance can ask the downstream model itself
        what it gets wrong. Optional: a task that cannot is simply not saved."""
        raise NotImplementedError(f"task {self.name!r} cannot save its model")


class ReportSection:
    """A section of `synth report`'s page that a plugin adds about an output folder (what its
    own command wrote beside or around it: a search's trials, say). Registered with
    ``register_report_sections``; ``render`` returns the section as (html, markdown), or None
    when the folder has nothing of it. The html is self-contained (pictures inlined)."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    @classmethod
    def render(cls, folder: Any) -> tuple[str, str] | None:
        raise NotImplementedError
