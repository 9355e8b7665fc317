from synth.hookspecs import hookimpl


@hookimpl
def register_stages(register):
    from .stages import ClipScore, Dedup, Memorisation, Metrics, Realism, Select

    for stage in (Realism, ClipScore, Memorisation, Dedup, Select, Metrics):
        register(stage)


@hookimpl
def register_extractors(register):
    from .extractors import ClipFeatures, DinoFeatures, InceptionFeatures
    from .generator_features import GeneratorFeatures

    for ex in (ClipFeatures, DinoFeatures, InceptionFeatures, GeneratorFeatures):
        register(ex)


@hookimpl
def register_commands(cli):
    from .commands import register

    register(cli)
