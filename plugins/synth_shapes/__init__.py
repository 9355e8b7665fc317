"""The shapes world: procedural scenes with exact per-pixel class masks, as a source stage,
plus the small models synth ships for it (a generator and a feature network)."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "render_many": ".world",
    "render_cells": ".cells",
    "FeatureNet": ".featurenet",
    "confident": ".featurenet",
    "Oracle": ".oracle",
    "confident_foreground": ".oracle",
    "label_agreement": ".oracle",
    "shape_fidelity": ".oracle",
    "worst_confusions": ".oracle",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
