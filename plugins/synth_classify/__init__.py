"""Image-level labels from a classifier: a transformers image-classification model (hub id or
local folder) or zero-shot CLIP over the run's class names. A labeller for sigma = "auto" and for
any dataset whose label is one class per image."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "small_cnn": ".classifiers",
    "save_classifier": ".classifiers",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
