"""The data++ operators: real images into latent space (invert) and the operators on latents
(views, interpolate, direction, compose, prompt_edit) plus classic augmentation, each seeded
from (manifest seed, sample index, op) and recorded in every child's lineage."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "AugmentConfig": ".augment",
    "augment_one": ".augment",
    "mix": ".common",
    "psnr": ".invert",
    "largest_agreeing": ".sigma_auto",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
