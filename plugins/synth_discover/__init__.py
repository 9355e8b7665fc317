"""synth discover: which attributes a classifier relies on, found as directions in the
generator's h-space that change its decision most."""
