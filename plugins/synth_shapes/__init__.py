"""The shapes world: procedural scenes with exact per-pixel class masks, as a source stage,
plus the small models synth ships for it (a generator and a feature network)."""
