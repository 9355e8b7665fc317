"""The plugin contract: a handful of hooks, each called once per process.

A plugin is a module registered under the entry-point group ``synth``. It implements any of
these hooks with ``@synth.hookimpl``. First-party plugins (plugins/ in this repository) use
exactly the same hooks as third-party packages.
"""

import pluggy

hookspec = pluggy.HookspecMarker("synth")
hookimpl = pluggy.HookimplMarker("synth")


@hookspec
def register_generators(register):
    """Register generator classes: ``register(GeneratorSubclass)``.

    A generator is the G of data++: it samples latents from seeds and decodes them (with a
    condition such as a prompt or class) to images; it may also invert images and expose
    per-pixel features. See ``synth.protocols.Generator``.
    """


@hookspec
def register_stages(register):
    """Register stage classes: ``register(StageSubclass)``.

    A stage is a source, transform, expand, filter or dataset-level step working on batches.
    See ``synth.protocols.Stage``.
    """


@hookspec
def register_models(register):
    """Register named model locations: ``register(name, path, description="", what="generator")``.

    Lets a manifest write ``model = "builtin:NAME"`` for a model a package ships, instead of a
    filesystem path or a hub id. ``what`` says what loads it: "generator" (a generator's model)
    or "classifier" (``classifier = { name = "torch", path = "builtin:NAME" }``); a name used
    as the other is one line.
    """


@hookspec
def register_commands(cli):
    """Add subcommands to the ``synth`` command line: ``cli`` is the click group.

    For example the diffusers plugin adds ``synth fit``. Keep imports of model libraries inside
    the command's function so that ``synth --help`` stays fast.
    """


@hookspec
def register_tables(register):
    """Register a top-level manifest table that a plugin's command reads:
    ``register(name, ConfigModel)`` with a ``synth.protocols.PluginConfig`` subclass.

    For example the diffusers plugin registers ``fit`` (the recipe `synth fit` trains with), so
    `synth validate` checks a manifest's ``[fit]`` table and `synth schema` describes it. A
    manifest's top-level tables are exactly the engine's own plus the registered ones.
    """


@hookspec
def register_executors(register):
    """Register executor classes: ``register(ExecutorSubclass)``.

    An executor runs a run's pending shard tasks: in this process (``local``, built in) or on a
    cluster (``ray``, from the synth_ray plugin), and a Dask or Spark one could follow. Chosen by
    ``[run] executor`` or ``synth run --executor NAME``. See ``synth.protocols.Executor``.
    """


@hookspec
def register_extractors(register):
    """Register feature extractor classes: ``register(FeatureExtractorSubclass)``.

    An extractor turns images into one vector each (CLIP, DINOv2, Inception, the shapes world's
    feature network); filters, near-duplicate removal, selection and dataset metrics use them.
    See ``synth.protocols.FeatureExtractor`` and ``synth.extractors``.
    """


@hookspec
def register_classifiers(register):
    """Register image classifier classes: ``register(ClassifierSubclass)``.

    A classifier maps images to logits over its own class names (a transformers model, a small
    torch network saved with its preprocessing); stages that label images by class, and tools
    that ask what a classifier relies on, name one by table. See ``synth.protocols.Classifier``.
    """


@hookspec
def register_tasks(register):
    """Register downstream task classes: ``register(TaskSubclass)``.

    A task trains a small model on a dataset's samples and scores it on labelled real images
    (segmentation mIoU, classification accuracy): ``synth optimise`` ranks datasets by it and a
    selection can ask which samples teach what the validation set needs. See
    ``synth.protocols.Task`` and ``synth.tasks``.
    """


@hookspec
def register_probes(register):
    """Register attribute probe classes: ``register(ProbeSubclass)``.

    A probe measures named attributes of images (a shape's colour, size, position; the
    background) and says which of them an edit changed: ``synth discover`` names what each
    discovered direction moves with one, and counts the attributes a counterfactual changes
    besides the one it is about. See ``synth.protocols.Probe``.
    """


@hookspec
def register_report_sections(register):
    """Register report section classes: ``register(ReportSectionSubclass)``.

    `synth report OUT` asks each for its section about the output folder (``render(folder)``:
    (html, markdown) or None), so a plugin whose command writes something about a run (``synth
    optimise``'s trials) shows it on the run's page. See ``synth.protocols.ReportSection``.
    """
