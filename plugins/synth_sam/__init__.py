"""Segment Anything as a labelling stage: automatic instances, prompted masks, and refinement of
the pixel head's class regions with SAM's boundaries; two backends (the segment-anything package
and transformers' SamModel) behind one config."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "RELEASED": ".architecture",
    "SamArchitecture": ".architecture",
    "build_segment_anything": ".architecture",
    "SamStageConfig": ".config",
    "SamStage": ".stage",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
