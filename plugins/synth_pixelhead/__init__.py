"""DatasetGAN-style labelling: a pixel-MLP ensemble on a generator's own features."""
