from synth.hookspecs import hookimpl

from .generate import Generate
from .sources import FolderSource, ShardsSource
from .stats import ImageStats, Threshold


@hookimpl
def register_stages(register):
    register(Generate)
    register(ImageStats)
    register(Threshold)
    register(FolderSource)
    register(ShardsSource)


@hookimpl
def register_executors(register):
    # The core's own executor, registered through the same hook as a cluster executor plugin.
    from synth.engine import LocalExecutor

    register(LocalExecutor)
