"""Image-level labels from a classifier: a transformers image-classification model (hub id or
local folder) or zero-shot CLIP over the run's class names. A labeller for sigma = "auto" and for
any dataset whose label is one class per image."""
