"""Registers the `sam` label stage."""

from synth.hookspecs import hookimpl

from .stage import SamStage


@hookimpl
def register_stages(register):
    register(SamStage)
