from synth.hookspecs import hookimpl


@hookimpl
def register_stages(register):
    from .stage import RegionClass

    register(RegionClass)
