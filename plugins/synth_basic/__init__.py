"""First-party stages that need no model library: generate, image_stats, threshold."""
