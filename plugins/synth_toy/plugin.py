from synth.hookspecs import hookimpl

from .generator import ToyGenerator


@hookimpl
def register_generators(register):
    register(ToyGenerator)
