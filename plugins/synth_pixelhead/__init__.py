"""DatasetGAN-style labelling: a pixel-MLP ensemble on a generator's own features."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "PixelHeadConfig": ".config",
    "feature_groups": ".extraction",
    "image_uncertainty": ".head",
    "upsample": ".pyramid",
    "train_head": ".training",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
