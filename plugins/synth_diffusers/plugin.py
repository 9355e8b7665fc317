from synth.hookspecs import hookimpl

from .generator import DiffusersGenerator


@hookimpl
def register_generators(register):
    register(DiffusersGenerator)
