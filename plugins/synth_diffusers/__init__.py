"""Generator plugin for any diffusers pipeline: unconditional UNet2DModel (DDPM/DDIM, optionally
class-conditional) and the Stable Diffusion family (text-to-image), from a local folder or a hub id.

torch and diffusers are imported only when a generator is set up, never at import time.
"""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "DiffusersConfig": ".config",
    "FeatureSpec": ".features",
    "Trainer": ".fit",
    "load_training_data": ".fit",
    "read_fit_config": ".fit",
    "evaluations": ".inversion",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
