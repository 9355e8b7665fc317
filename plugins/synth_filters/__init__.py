"""Fidelity, diversity and memorisation: feature extractors (CLIP, DINOv2, Inception), per-sample
filters (realism, clip_score, memorisation), dataset-level stages (dedup, select, metrics)."""
