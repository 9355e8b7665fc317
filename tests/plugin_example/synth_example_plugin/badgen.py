"""A plugin that hands a Stage class to register_generators (a registration mistake)."""

from synth.hookspecs import hookimpl

from . import Mirror


@hookimpl
def register_generators(register):
    register(Mirror)
