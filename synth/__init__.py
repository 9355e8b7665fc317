"""synth: generative models as a reproducible source of labelled training data.

The core (this package) holds the manifest, plugin system, engine and writer. It imports no
model library at import time: torch, diffusers and friends are imported by plugins, lazily.
"""

__version__ = "0.1.0"
