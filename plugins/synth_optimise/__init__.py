"""synth optimise: datasets chosen by what they teach a downstream model (tasks, search)."""
