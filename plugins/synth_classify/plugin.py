from synth.hookspecs import hookimpl

from .stage import Classify


@hookimpl
def register_stages(register):
    register(Classify)
