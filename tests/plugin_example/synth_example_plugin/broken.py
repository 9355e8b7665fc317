"""A plugin that fails on import, as a half-installed dependency would."""

raise RuntimeError("this plugin's dependency is missing")
