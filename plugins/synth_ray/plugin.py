from synth.hookspecs import hookimpl


@hookimpl
def register_executors(register):
    from .executor import RayExecutor

    register(RayExecutor)
