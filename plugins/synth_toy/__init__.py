"""A procedural toy generator: no weights, no model library, for demos and fast tests."""
