"""The data++ operators: real images into latent space (invert) and the operators on latents
(views, interpolate, direction, compose, prompt_edit) plus classic augmentation, each seeded
from (manifest seed, sample index, op) and recorded in every child's lineage."""
