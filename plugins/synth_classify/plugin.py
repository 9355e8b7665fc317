from synth.hookspecs import hookimpl

from .classifiers import TorchClassifier, TransformersClassifier, ZeroShotClassifier
from .stage import Classify


@hookimpl
def register_stages(register):
    register(Classify)


@hookimpl
def register_classifiers(register):
    register(TorchClassifier)
    register(TransformersClassifier)
    register(ZeroShotClassifier)
