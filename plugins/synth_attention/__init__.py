"""Labels from the generator's conditioning: where each class's token is attended (or where the
prediction moves when the class leaves the condition) says which pixels are that class."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "Rule": ".labels",
    "label": ".labels",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
