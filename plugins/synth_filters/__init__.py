"""Fidelity, diversity and memorisation: feature extractors (CLIP, DINOv2, Inception), per-sample
filters (realism, clip_score, memorisation), dataset-level stages (dedup, select, metrics)."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "GeneratorFeatures": ".generator_features",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
