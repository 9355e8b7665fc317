from synth.hookspecs import hookimpl


@hookimpl
def register_stages(register):
    from .augment import Augment
    from .compose import Compose
    from .img2img import Img2Img
    from .direction import Direction
    from .interpolate import Interpolate
    from .invert import Invert
    from .prompt_edit import PromptEdit
    from .views import Views

    for stage in (Invert, Views, Interpolate, Direction, Compose, PromptEdit, Augment, Img2Img):
        register(stage)
