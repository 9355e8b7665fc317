from synth.hookspecs import hookimpl

from .stages import DropUncertain, PixelHead


@hookimpl
def register_stages(register):
    register(PixelHead)
    register(DropUncertain)
