"""synth optimise: datasets chosen by what they teach a downstream model (tasks, search)."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "classify": ".models",
    "segment": ".models",
    "small_unet": ".models",
    "train_classifier": ".models",
    "train_segmenter": ".models",
    "optimise": ".search",
    "SegmentationConfig": ".tasks",
    "SegmentationTask": ".tasks",
    "save_task_model": ".task_model",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
