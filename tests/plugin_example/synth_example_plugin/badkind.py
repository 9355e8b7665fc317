"""A plugin whose stage declares a kind synth does not know."""

from synth.hookspecs import hookimpl
from synth.protocols import PluginConfig, Stage


class Odd(Stage):
    """A stage of an unknown kind."""

    name = "odd"
    kind = "transformer"
    Config = PluginConfig


@hookimpl
def register_stages(register):
    register(Odd)
