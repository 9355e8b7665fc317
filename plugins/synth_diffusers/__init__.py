"""Generator plugin for any diffusers pipeline: unconditional UNet2DModel (DDPM/DDIM, optionally
class-conditional) and the Stable Diffusion family (text-to-image), from a local folder or a hub id.

torch and diffusers are imported only when a generator is set up, never at import time.
"""
