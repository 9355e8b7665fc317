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
