from pathlib import Path

from synth.hookspecs import hookimpl

from .cells import CellsSource
from .classify import ShapesClassify
from .source import ShapesSource

MODELS = Path(__file__).parent / "models"


@hookimpl
def register_stages(register):
    register(ShapesSource)
    register(ShapesClassify)
    register(CellsSource)


@hookimpl
def register_extractors(register):
    from .extractor import ShapesFeatures

    register(ShapesFeatures)


@hookimpl
def register_models(register):
    for folder in sorted(MODELS.glob("*/model_index.json")):
        register(folder.parent.name, folder.parent, description=f"shipped shapes-world model {folder.parent.name}")
    for folder in sorted(MODELS.glob("*/classifier.json")):  # classifiers for the `torch` classifier (builtin:NAME)
        register(folder.parent.name, folder.parent, description=f"shipped shapes-world classifier {folder.parent.name}", what="classifier")


@hookimpl
def register_probes(register):
    from .probe import ShapesProbe

    register(ShapesProbe)
